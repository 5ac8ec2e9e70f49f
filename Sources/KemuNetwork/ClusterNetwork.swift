import Foundation
import KemuIP
import KemuNetlink
import KemuSystem
import Synchronization

/// One cluster's emulated network (README.md, "The topology"): the fabric LAN, the cp / client / lb hosts, the
/// nodes with their pod bridges and routes, and pod sandboxes.
///
/// Everything it creates is named `kemu-<cluster>-…`, so `teardown` finds and removes all of it by
/// name, even after a crash. Its own records (node indices, pod addresses) live in
/// `stateDirectory`, by default `/run/kemu/<cluster>/`.
public final class ClusterNetwork: Sendable {
    public let plan: AddressPlan
    public let stateDirectory: String
    let backend: any NetworkBackend
    let state: Mutex<NetworkState>
    /// One netlink handle per host namespace (fabric, nodes), opened on first use.
    let handles = Mutex<[String: any Netlink]>([:])
    /// Node index → the lowest pod address slot that may be free (see `claimAddress`).
    let addressHints = Mutex<[Int: Int]>([:])

    public static func defaultStateDirectory(_ cluster: String) -> String { "/run/kemu/\(cluster)" }

    /// A network for `config`, not built yet: call `up()`.
    public init(config: ClusterConfig, backend: any NetworkBackend = KernelBackend(), stateDirectory: String? = nil) throws {
        let errors = config.validate()
        if !errors.isEmpty { throw ConfigErrors(source: "cluster \(config.name)", errors: errors) }
        plan = AddressPlan(config)
        self.backend = backend
        self.stateDirectory = stateDirectory ?? Self.defaultStateDirectory(config.name)
        state = Mutex(NetworkState(config: config))
    }

    /// The network of a cluster that is already up, from its state directory.
    public static func load(cluster: String, backend: any NetworkBackend = KernelBackend(), stateDirectory: String? = nil) throws -> ClusterNetwork {
        let directory = stateDirectory ?? defaultStateDirectory(cluster)
        let saved: NetworkState
        do {
            saved = try JSONDecoder().decode(NetworkState.self, from: Data(FileSystem.readFile("\(directory)/network.json").utf8))
        } catch {
            throw KemuError(.notFound, "cluster \(cluster) is not up (no \(directory)/network.json); start it with: kemu net up", cause: error)
        }
        let network = try ClusterNetwork(config: saved.config, backend: backend, stateDirectory: directory)
        network.state.withLock { $0 = saved }
        return network
    }

    public var config: ClusterConfig { state.withLock { $0.config } }
    public var nodes: [(name: String, index: Int)] {
        state.withLock { s in s.config.nodes.map { ($0, s.nodeIndex[$0]!) } }
    }

    func nodeIndex(_ name: String) throws -> Int {
        guard let index = state.withLock({ $0.nodeIndex[name] }) else {
            throw KemuError(.notFound, "node \(name) is not in cluster \(plan.cluster) (nodes: \(config.nodes.joined(separator: ", ")))")
        }
        return index
    }

    /// The cached handle for a host namespace.
    func netlink(_ namespace: String) throws -> any Netlink {
        if let handle = handles.withLock({ $0[namespace] }) { return handle }
        let handle = try backend.netlink(namespace)
        return handles.withLock { cache in
            if let existing = cache[namespace] { return existing }
            cache[namespace] = handle
            return handle
        }
    }

    func remember(_ handle: any Netlink, for namespace: String) { handles.withLock { $0[namespace] = handle } }

    func forget(_ namespace: String) { _ = handles.withLock { $0.removeValue(forKey: namespace) } }

    func saveState() throws {
        let snapshot = state.withLock { $0 }
        try FileSystem.makeDirectories(stateDirectory)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try FileSystem.writeFile("\(stateDirectory)/network.json", String(decoding: try encoder.encode(snapshot), as: UTF8.self))
    }
}

/// What a cluster network remembers between commands.
struct NetworkState: Codable, Sendable {
    var config: ClusterConfig
    /// Node name → index (its fabric host number − 10 and its pod subnet). Kept apart from the
    /// order of `config.nodes` so removing a node never renumbers the others.
    var nodeIndex: [String: Int]

    init(config: ClusterConfig) {
        self.config = config
        nodeIndex = Dictionary(uniqueKeysWithValues: config.nodes.enumerated().map { ($1, $0 + 1) })
    }
}
