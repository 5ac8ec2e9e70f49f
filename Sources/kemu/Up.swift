import ArgumentParser
import KemuCluster

struct Up: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Bring a cluster up: network, API server, one node agent per node; returns when every node is Ready.",
        discussion: "The cluster becomes the current one: later commands without --cluster mean it (kemu use NAME switches).")

    @OptionGroup var options: ClusterOptions
    @Option(help: "Seconds to wait for every node to be Ready.") var timeout: Double = 30
    @Option(help: ArgumentHelp("Keep the cluster's objects and volumes here, across `kemu down` and `kemu up`.",
                               discussion: "Without it they live under /run/kemu/NAME and go with `kemu down`."))
    var dataDir: String?

    func run() async throws {
        try requireRoot("kemu up")
        var launcher = ClusterLauncher(config: try options.config())
        launcher.dataDir = dataDir
        launcher.timeout = timeout
        try await launcher.up()
        let name = launcher.config.name
        print("""

          export KUBECONFIG=\(launcher.files.kubeconfig)
          kubectl get nodes -o wide
          kemu status --cluster \(name)
          kemu down --cluster \(name)
        """)
    }
}

struct Down: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stop a cluster's daemons and pods and remove everything of it, found by name (also after a crash).")

    @OptionGroup var options: ClusterOptions

    func run() throws {
        try requireRoot("kemu down")
        let cluster = try options.clusterName()
        let removed = try ClusterLauncher.down(cluster: cluster)
        if removed.isEmpty {
            print("cluster \(cluster): nothing to remove")
        } else {
            print("cluster \(cluster): stopped \(removed.daemons.count) daemons (\(removed.daemons.sorted().joined(separator: " "))), removed \(removed.teardown.namespaces.count) namespaces, killed \(removed.teardown.killedProcesses.count) processes")
        }
    }
}

struct Use: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a running cluster the current one (what commands mean without --cluster), or show which is.")

    @Argument(help: "The cluster (none: print the current cluster and every running one).") var name: String?

    func run() throws {
        let selection = ClusterSelection()
        guard let name else {
            let running = selection.running()
            print("current: \(selection.current ?? "none")\nrunning: \(running.isEmpty ? "none" : running.joined(separator: ", "))")
            return
        }
        guard selection.running().contains(name) else {
            let running = selection.running()
            throw ValidationError("cluster \(name) is not running (running: \(running.isEmpty ? "none" : running.joined(separator: ", ")))")
        }
        try requireRoot("kemu use")
        try selection.setCurrent(name)
        print("cluster \(name) is now current")
    }
}
