import Foundation

/// What this one machine can hold, so a cluster asked for more than that is refused or held back
/// with the scheduler's own words ("Too many pods") rather than started into a death spiral.
///
/// - Nodes: each runs a node agent and a proxy that heartbeat, watch and re-plan all the time; on
///   this project's 2-core machine 100 nodes and 1,000 pods converge (make bench-scale), so a
///   cluster may have at most 100 nodes per core.
/// - Pods: a pod is a network namespace, a veth pair, its processes, and an endpoint in every
///   proxy; measured at 2.5 MiB of machine memory per `kemu/echo` pod, budgeted at 8 MiB (a
///   user's program is bigger), from three quarters of the machine's memory. Each node's pod
///   capacity is its share of that, never more than the config's `nodeResources.pods`.
public struct MachineBudget: Sendable, Equatable {
    public var cores: Int
    public var memoryBytes: UInt64

    public static let nodesPerCore = 100
    public static let bytesPerPod: UInt64 = 8 << 20

    public init(cores: Int, memoryBytes: UInt64) {
        self.cores = max(1, cores)
        self.memoryBytes = memoryBytes
    }

    /// This machine: online cores and MemTotal.
    public static let current: MachineBudget = {
        let meminfo = (try? FileSystem.readFile("/proc/meminfo")) ?? ""
        let kib = meminfo.split(separator: "\n").first { $0.hasPrefix("MemTotal:") }?
            .split(separator: " ").dropFirst().first.flatMap { UInt64($0) } ?? 0
        return MachineBudget(cores: ProcessInfo.processInfo.activeProcessorCount, memoryBytes: kib * 1024)
    }()

    public var maxNodes: Int { cores * Self.nodesPerCore }
    public var maxPods: Int { Int(memoryBytes / 4 * 3 / Self.bytesPerPod) }

    /// Each node's pod capacity in a cluster of `nodes` nodes.
    public func podsPerNode(configured: Int, nodes: Int) -> Int {
        min(configured, max(1, maxPods / max(1, nodes)))
    }

    /// Refuses a node count the machine cannot run, naming the field.
    public func check(nodes: Int) throws {
        guard nodes <= maxNodes else {
            throw KemuError(.invalidArgument, "nodes: \(nodes) nodes are more than this machine holds: at most \(maxNodes) (\(Self.nodesPerCore) per core, \(cores) cores; each node runs an agent and a proxy)")
        }
    }

    /// Why a workload of `replicas` is more than the machine runs; nil when it is not.
    public func replicasProblem(_ replicas: Int64) -> String? {
        guard replicas > Int64(maxPods) else { return nil }
        return "must be no more than \(maxPods): this machine (\(cores) cores, \(memoryText)) runs about \(maxPods) pods in all (kemu budgets \(Self.bytesPerPod >> 20) MiB of memory per pod)"
    }

    public var memoryText: String { String(format: "%.0f GiB", Double(memoryBytes) / Double(1 << 30)) }
}
