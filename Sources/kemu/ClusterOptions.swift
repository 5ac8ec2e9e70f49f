import ArgumentParser
import KemuCluster
import KemuNetwork
import KemuLab
import KemuSystem

/// Which cluster a command is about. `kemu up` builds the one `-f FILE` describes (default:
/// configs/cluster.yaml if present, else the defaults), named `--cluster` if given. Every other
/// command means `--cluster NAME`, or the name in `-f FILE`, or else what ClusterSelection finds:
/// the current cluster (the last one `kemu up` built, or `kemu use NAME`), the only one running.
struct ClusterOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: "Cluster config file (default: configs/cluster.yaml if present).")
    var file: String?

    @Option(name: .long, help: "Cluster name (default: the current cluster, or the only one running).")
    var cluster: String?

    static let defaultFile = "configs/cluster.yaml"

    /// The config to build: the file's (or the defaults), with `--cluster` applied.
    func config() throws -> ClusterConfig {
        try ClusterConfig.load(file: file ?? (FileSystem.exists(Self.defaultFile) ? Self.defaultFile : nil), name: cluster)
    }

    /// The cluster a command about a running cluster means.
    func clusterName() throws -> String { try Self.clusterName(cluster: cluster, file: file) }

    static func clusterName(cluster: String?, file: String?) throws -> String {
        if let cluster { return cluster }
        if let file { return try ClusterConfig.load(file: file, name: nil).name }
        let projectDefault = FileSystem.exists(Self.defaultFile) ? try? ClusterConfig.load(file: Self.defaultFile, name: nil).name : nil
        return try ClusterSelection().resolve(named: nil, projectDefault: projectDefault)
    }

    /// The running cluster's network, for `command` (which needs root).
    func runningNetwork(for command: String) throws -> ClusterNetwork {
        try requireRoot(command)
        return try ClusterNetwork.load(cluster: try clusterName())
    }

    /// The running cluster and an admin client of it, for `command` (which needs root).
    func running(for command: String) throws -> RunningCluster {
        try RunningCluster(name: try clusterName(), for: command)
    }
}

extension ClusterOptions {
    /// The failover lab's hands on the running cluster, for `command` (which needs root).
    func chaos(for command: String) throws -> Chaos { try Chaos(cluster: try clusterName(), for: command) }
}
