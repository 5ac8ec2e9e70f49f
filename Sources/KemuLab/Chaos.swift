import Foundation
import Glibc
import KemuAgent
import KemuCluster
import KemuAPI
import KemuClient
import KemuIP
import KemuNetwork
import KemuSystem

/// The failover lab's actions on a running cluster. Each one is reversible and is told to the
/// cluster as an Event (source component `kemu-chaos`), so `kubectl get events` shows what was
/// done to it beside how it reacted.
///
/// A stopped or partitioned node is remembered in the state directory (`chaos/NODE.json`), so
/// `kemu start node` / `kemu heal node` undo exactly what was done, from any later command.
public struct Chaos: Sendable {
    public let cluster: RunningCluster
    public let network: ClusterNetwork
    static let component = "kemu-chaos"

    /// The lab's hands on the running cluster `name`; `command` names what needs them, for errors.
    public init(cluster name: String, for command: String) throws {
        cluster = try RunningCluster(name: name, for: command)
        network = try ClusterNetwork.load(cluster: name)
    }

    /// How a stopped node stops. `crash`: its agent, proxy and pod processes are killed and its
    /// fabric link goes down, as a machine that lost power (`start` boots it: the agent starts
    /// again and restarts the containers). `freeze`: the same processes are stopped (SIGSTOP) and
    /// the link goes down, as a hung or paused machine (`start` resumes them where they were).
    public enum StopMode: String, CaseIterable, Codable, Sendable {
        case crash, freeze
    }

    /// What was done to a node, to be undone.
    public struct NodeRecord: Codable, Sendable {
        public var stopped: StopMode?
        /// Processes a freeze stopped: pid and kernel start time (a recycled pid is left alone).
        public var frozen: [[UInt64]] = []
        public var partitioned = false
    }

    // MARK: pods

    /// Sends `signal` to the processes of a pod's containers (all, or `container`); returns a line
    /// per process signalled, and when.
    @discardableResult
    public func killPod(_ name: String, namespace: String, signal: Int32, container: String? = nil) async throws -> (lines: [String], at: Date) {
        let pod: JSON
        do {
            pod = try await cluster.pod(name, namespace: namespace)
        } catch where !(error is ClientError) && !(error is KemuError) {
            // The API server is down (no connection, no answer): the node agents' own records say
            // which processes the pod runs, so the lab works without the control plane.
            guard let local = localPod(name, namespace: namespace) else { throw error }
            pod = local
        }
        let containers = (pod[path: "spec.containers"]?.array ?? []).compactMap { $0["name"]?.string }
        if let container, !containers.contains(container) {
            throw KemuError(.notFound, "container \(container) is not in pod \(namespace)/\(name) (containers: \(containers.joined(separator: ", ")))")
        }
        let runtimeFile = PodWorker.logDirectory("\(cluster.files.state)/logs", pod) + "/runtime.json"
        let runtime = (try? FileSystem.readFile(runtimeFile)).flatMap { try? JSON.parse(Array($0.utf8)) }
        var done: [String] = []
        let at = Date()
        for c in containers where container == nil || c == container {
            guard let entry = runtime?[path: "containers"]?[c], let pid = entry["pid"]?.int.map({ pid_t($0) }),
                  let start = entry["processStart"]?.string.flatMap(UInt64.init), ProcessReaper.startTime(of: pid) == start else { continue }
            guard Glibc.kill(pid, signal) == 0 else { continue }
            done.append("container \(c) (pid \(pid))")
        }
        guard !done.isEmpty else {
            throw KemuError(.invalidState, "pod \(namespace)/\(name) has no running container process (phase \(pod[path: "status.phase"]?.string ?? "Pending"), node \(pod[path: "spec.nodeName"]?.string ?? "none"))")
        }
        await record(pod, kind: "Pod", type: "Warning", reason: "ChaosPodKilled",
                     message: "kemu kill pod: \(Self.signalName(signal)) to \(done.joined(separator: ", "))")
        return (done, at)
    }

    /// A pod as its agent recorded it (`logs/NS_NAME_UID/runtime.json`): name, namespace, uid
    /// and containers, for when the API cannot be asked. nil when no agent ran it.
    func localPod(_ name: String, namespace: String) -> JSON? {
        let base = "\(cluster.files.state)/logs"
        let prefix = "\(namespace)_\(name)_"
        for directory in FileSystem.list(base) where directory.hasPrefix(prefix) {
            guard let text = try? FileSystem.readFile("\(base)/\(directory)/runtime.json"),
                  let runtime = try? JSON.parse(Array(text.utf8)), let containers = runtime["containers"]?.object else { continue }
            var pod: JSON = ["apiVersion": "v1", "kind": "Pod",
                             "spec": ["containers": .array(containers.keys.map { ["name": .string($0)] })]]
            pod.name = name
            pod.namespace = namespace
            pod["metadata", default: [:]]["uid"] = .string(String(directory.dropFirst(prefix.count)))
            return pod
        }
        return nil
    }

    // MARK: the API server

    /// What Events about the control plane are about: the kube-system Namespace.
    static var controlPlane: JSON {
        var object: JSON = ["apiVersion": "v1", "kind": "Namespace"]
        object.name = "kube-system"
        return object
    }

    /// Stops the cluster's API server (and with it the controllers): node agents and proxies keep
    /// running on what they last knew, as a control-plane outage leaves a real cluster.
    public func stopServer(signal: Int32 = SIGTERM) async throws {
        guard let pid = Daemon.running("server", cluster.files) else {
            throw KemuError(.invalidState, "the API server of \(cluster.name) is not running; start it with: kemu start server")
        }
        await record(Self.controlPlane, kind: "Namespace", type: "Warning", reason: "ChaosAPIServerStopped",
                     message: "kemu stop server: \(Self.signalName(signal)) to pid \(pid)")
        Daemon.stop("server", cluster.files, signal: signal)
    }

    public func startServer() async throws {
        if let pid = Daemon.running("server", cluster.files) {
            throw KemuError(.invalidState, "the API server of \(cluster.name) is already running (pid \(pid))")
        }
        try ClusterLauncher.startServer(network, cluster.files)
        // It listens on a new loopback port: a client of the new kubeconfig tells it.
        let again = try Chaos(cluster: cluster.name, for: "kemu start server")
        await again.record(Self.controlPlane, kind: "Namespace", type: "Normal", reason: "ChaosAPIServerStarted", message: "kemu start server: serving again")
    }

    // MARK: nodes

    /// Returns when the node was cut off (its link went down).
    @discardableResult
    public func stopNode(_ node: String, mode: StopMode) async throws -> Date {
        var state = try nodeRecord(node)
        if let stopped = state.stopped {
            throw KemuError(.invalidState, "node \(node) is already stopped (\(stopped.rawValue)); start it with: kemu start node \(node)")
        }
        state.stopped = mode
        try save(state, node)  // first, so a start can undo whatever follows
        let cut = Date()
        try network.setFabricLink(node, up: false)
        let names = ["node-\(node)", "proxy-\(node)"]
        let daemons = names.compactMap { name in Daemon.running(name, cluster.files).map { (name, $0) } }
        let processes = daemons.map(\.1) + (try network.podProcesses(on: node))
        switch mode {
        case .crash:
            // Their pid files first: a crashed machine's daemons stay down until it boots, the
            // supervisor must not restart them.
            for name in names { try? FileSystem.removeFile(cluster.files.pidFile(name)) }
            for pid in processes { Glibc.kill(pid, SIGKILL) }
            for (name, pid) in daemons { Daemon.reap(name, pid, cluster.files) }
        case .freeze:
            for pid in processes where Glibc.kill(pid, SIGSTOP) == 0 {
                if let start = ProcessReaper.startTime(of: pid) { state.frozen.append([UInt64(pid), start]) }
            }
            try save(state, node)
        }
        let what = mode == .crash ? "killed (a crash)" : "frozen (SIGSTOP)"
        await recordNode(node, type: "Warning", reason: "ChaosNodeStopped",
                         message: "kemu stop node --mode \(mode.rawValue): fabric link down; agent, proxy and \(processes.count - daemons.count) pod processes \(what)")
        return cut
    }

    public func startNode(_ node: String) async throws {
        var state = try nodeRecord(node)
        guard let mode = state.stopped else { throw KemuError(.invalidState, "node \(node) is not stopped") }
        switch mode {
        case .crash:
            try ClusterLauncher.startNodeDaemons(node, network, cluster.files)
        case .freeze:
            for entry in state.frozen where entry.count == 2 && ProcessReaper.startTime(of: pid_t(entry[0])) == entry[1] {
                Glibc.kill(pid_t(entry[0]), SIGCONT)
            }
        }
        if !state.partitioned { try network.setFabricLink(node, up: true) }
        state.stopped = nil
        state.frozen = []
        try save(state, node)
        await recordNode(node, type: "Normal", reason: "ChaosNodeStarted",
                         message: "kemu start node: " + (mode == .crash ? "agent and proxy started again" : "processes resumed (SIGCONT)")
                            + (state.partitioned ? "; still partitioned" : "; fabric link up"))
    }

    /// Returns when the node was cut off.
    @discardableResult
    public func partition(_ node: String) async throws -> Date {
        var state = try nodeRecord(node)
        if state.partitioned { throw KemuError(.invalidState, "node \(node) is already partitioned; heal it with: kemu heal node \(node)") }
        state.partitioned = true
        try save(state, node)
        let cut = Date()
        try network.setFabricLink(node, up: false)
        await recordNode(node, type: "Warning", reason: "ChaosNodePartitioned",
                         message: "kemu partition node: fabric link down (packets to and from \(node) are lost)")
        return cut
    }

    public func heal(_ node: String) async throws {
        var state = try nodeRecord(node)
        guard state.partitioned else { throw KemuError(.invalidState, "node \(node) is not partitioned") }
        state.partitioned = false
        if state.stopped == nil { try network.setFabricLink(node, up: true) }
        try save(state, node)
        await recordNode(node, type: "Normal", reason: "ChaosNodeHealed",
                         message: "kemu heal node: " + (state.stopped == nil ? "fabric link up" : "no longer partitioned; still stopped"))
    }

    // MARK: proxies

    public func stopProxy(_ node: String, signal: Int32 = SIGTERM) async throws {
        _ = try NodeAgent.nodeIndex(node, in: network)
        guard let pid = Daemon.running("proxy-\(node)", cluster.files) else {
            throw KemuError(.invalidState, "the proxy of \(node) is not running; start it with: kemu start proxy \(node)")
        }
        Daemon.stop("proxy-\(node)", cluster.files, signal: signal)
        await recordNode(node, type: "Warning", reason: "ChaosProxyStopped", message: "kemu stop proxy: \(Self.signalName(signal)) to pid \(pid)")
    }

    public func startProxy(_ node: String) async throws {
        _ = try NodeAgent.nodeIndex(node, in: network)
        if let pid = Daemon.running("proxy-\(node)", cluster.files) {
            throw KemuError(.invalidState, "the proxy of \(node) is already running (pid \(pid))")
        }
        if try nodeRecord(node).stopped != nil {
            throw KemuError(.invalidState, "node \(node) is stopped; start it (and its proxy) with: kemu start node \(node)")
        }
        try ClusterLauncher.startProxy(node, network, cluster.files)
        await recordNode(node, type: "Normal", reason: "ChaosProxyStarted", message: "kemu start proxy: started again")
    }

    // MARK: records

    public func nodeRecord(_ node: String) throws -> NodeRecord {
        _ = try NodeAgent.nodeIndex(node, in: network)
        guard let text = try? FileSystem.readFile(recordPath(node)) else { return NodeRecord() }
        return (try? JSONDecoder().decode(NodeRecord.self, from: Data(text.utf8))) ?? NodeRecord()
    }

    private func save(_ record: NodeRecord, _ node: String) throws {
        if record.stopped == nil && !record.partitioned {
            try FileSystem.removeFile(recordPath(node))
            return
        }
        try FileSystem.makeDirectories("\(cluster.files.state)/chaos")
        try FileSystem.writeFile(recordPath(node), String(decoding: try JSONEncoder().encode(record), as: UTF8.self))
    }

    private func recordPath(_ node: String) -> String { "\(cluster.files.state)/chaos/\(node).json" }

    /// An Event about `object`; the action already happened, so a failure to tell is only logged.
    func record(_ object: JSON, kind: String, type: String, reason: String, message: String) async {
        let event = Events.make(for: object, kind: kind, type: type, reason: reason, message: message,
                                component: Self.component, at: Timestamp.now())
        do {
            _ = try await cluster.client.create(APIResources.events, event)
        } catch {
            FileHandle.standardError.write(Data("kemu: could not record event \(reason): \(error)\n".utf8))
        }
    }

    func recordNode(_ node: String, type: String, reason: String, message: String) async {
        let nodes = APIResources.nodes
        var object = (try? await cluster.client.get(nodes, name: node)) ?? [:]
        object.name = node
        await record(object, kind: "Node", type: type, reason: reason, message: message)
    }

    // MARK: signals

    public static let signals: [String: Int32] = ["HUP": SIGHUP, "INT": SIGINT, "QUIT": SIGQUIT, "KILL": SIGKILL, "USR1": SIGUSR1,
                                           "USR2": SIGUSR2, "TERM": SIGTERM, "STOP": SIGSTOP, "CONT": SIGCONT]

    /// `KILL`, `SIGKILL`, `kill` or `9`.
    public static func parseSignal(_ text: String) throws -> Int32 {
        let upper = text.uppercased()
        if let n = Int32(text), n > 0, n < 65 { return n }
        if let n = signals[upper.hasPrefix("SIG") ? String(upper.dropFirst(3)) : upper] { return n }
        throw KemuError(.invalidArgument, "--signal \(text): not a signal (one of \(signals.keys.sorted().joined(separator: ", ")), or a number)")
    }

    public static func signalName(_ signal: Int32) -> String {
        signals.first { $0.value == signal }.map { "SIG" + $0.key } ?? "signal \(signal)"
    }
}
