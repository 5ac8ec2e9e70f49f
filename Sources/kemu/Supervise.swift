import ArgumentParser
import KemuCluster

/// What `kemu up` starts last: its daemons restarted when they exit unexpectedly.
struct Supervise: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "supervise", abstract: "Keep a cluster's daemons alive (kemu up runs it; see kemu status).", shouldDisplay: false)

    @Option(help: "Cluster name.") var cluster: String

    func run() async throws {
        try await Supervisor(files: ClusterFiles(cluster: cluster)).run()
    }
}
