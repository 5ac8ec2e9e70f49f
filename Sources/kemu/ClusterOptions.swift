import ArgumentParser
import Glibc
import KemuNetwork
import KemuSystem

/// Which cluster a command is about: `--cluster NAME`, or the name in `-f FILE`, or in
/// `configs/cluster.yaml` when run from the project, or `kemu`.
struct ClusterOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: "Cluster config file (default: configs/cluster.yaml if present).")
    var file: String?

    @Option(name: .long, help: "Cluster name (overrides the config file's).")
    var cluster: String?

    static let defaultFile = "configs/cluster.yaml"

    /// The config: the file's (or the defaults), with `--cluster` applied.
    func config() throws -> ClusterConfig {
        var config = ClusterConfig()
        let path = file ?? (FileSystem.exists(Self.defaultFile) ? Self.defaultFile : nil)
        if let path {
            let text: String
            do { text = try FileSystem.readFile(path) } catch {
                throw KemuError(.notFound, "cannot read cluster config \(path)", cause: error)
            }
            config = try ClusterConfig.parse(yaml: text, source: path)
        }
        if let cluster {
            config.name = cluster
            let errors = config.validate()
            if !errors.isEmpty { throw ConfigErrors(source: "--cluster", errors: errors) }
        }
        return config
    }

    func clusterName() throws -> String { try cluster ?? config().name }

    /// The running cluster's network, for `command` (which needs root).
    func runningNetwork(for command: String) throws -> ClusterNetwork {
        try requireRoot(command)
        return try ClusterNetwork.load(cluster: try clusterName())
    }
}

/// Everything under `kemu net` changes namespaces: refuse early, before touching anything.
func requireRoot(_ what: String) throws {
    guard geteuid() == 0 else {
        throw KemuError(.permissionDenied, "\(what) needs root: it creates and enters network namespaces (try: sudo kemu …)")
    }
}
