import Foundation
import KemuNetwork
import KemuSystem

/// Which cluster a command is about, as kind and kubectl decide it: a cluster named on the command
/// line (`--cluster`, or the name in `-f FILE`) first; else the current cluster (`kemu up` makes
/// the cluster it built current, `kemu use NAME` switches) while it runs; else the one cluster
/// that runs; else the name in configs/cluster.yaml of the working directory, else `kemu`. Several
/// clusters running and none of them current is an error that names them, never a guess.
public struct ClusterSelection: Sendable {
    /// Where every cluster's state directory is (/run/kemu), and the `current` file.
    public var root: String
    public static let defaultRoot = "/run/kemu"

    public init(root: String = ClusterSelection.defaultRoot) { self.root = root }

    public var currentFile: String { "\(root)/current" }

    /// The clusters that are up (their network was built: DIR/NAME/network.json), by name.
    public func running() -> [String] {
        FileSystem.list(root).filter { FileSystem.exists("\(root)/\($0)/network.json") }.sorted()
    }

    /// The cluster `kemu up` or `kemu use` made current last (whether it still runs or not).
    public var current: String? {
        guard let text = try? FileSystem.readFile(currentFile) else { return nil }
        let name = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return name.isEmpty ? nil : name
    }

    public func setCurrent(_ name: String) throws {
        try FileSystem.makeDirectories(root, mode: 0o755)
        try FileSystem.writeFile(currentFile, name + "\n")
    }

    /// After `kemu down NAME`: a current cluster that is gone is current no more.
    public func forget(_ name: String) {
        if current == name { try? FileSystem.removeFile(currentFile) }
    }

    /// The name of the cluster a command means. `named` is what the command line said (`--cluster`
    /// or the name in `-f FILE`), `projectDefault` the name in ./configs/cluster.yaml if there is one.
    public func resolve(named: String?, projectDefault: String?) throws -> String {
        if let named { return named }
        let up = running()
        if let current, up.contains(current) { return current }
        if up.count == 1 { return up[0] }
        if up.count > 1 {
            throw KemuError(.invalidArgument, "\(up.count) clusters are running (\(up.joined(separator: ", "))) and none is current: "
                            + "name one with --cluster NAME, or make it current with: kemu use NAME")
        }
        return projectDefault ?? ClusterConfig().name
    }
}
