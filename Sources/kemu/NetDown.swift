import ArgumentParser
import KemuCluster
import KemuNetwork

struct NetDown: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "down", abstract: "Remove everything of a cluster's network, found by name.")

    @OptionGroup var options: ClusterOptions

    func run() throws {
        try requireRoot("kemu net down")
        let cluster = try options.clusterName()
        let report = try ClusterNetwork.teardown(cluster: cluster)
        if report.namespaces.isEmpty && report.etcDirectories.isEmpty {
            print("cluster \(cluster): nothing to remove")
        } else {
            print("cluster \(cluster): removed \(report.namespaces.count) namespaces, killed \(report.killedProcesses.count) processes")
        }
    }
}
