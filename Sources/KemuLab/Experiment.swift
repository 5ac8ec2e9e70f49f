import Foundation
import KemuAPI
import KemuIP
import KemuSystem
import Yams

/// A failover experiment, as written in a YAML file (configs/experiments/):
///
/// ```yaml
/// name: pod-kill
/// apply: web.yaml                 # manifests applied first (relative to this file), waited for
/// duration: 10s
/// load:                           # one load or a list
///   service: web                  # in `namespace` (default default); or address: IP:PORT
///   via: cluster-ip               # cluster-ip | node-port | load-balancer
///   from: app=client              # client (default), a node, a pod, or a label selector
///   clients: 4
///   rate: 200                     # requests per second in all (0: as fast as possible)
///   mode: connect                 # connect (a connection per request) | keep-alive
/// actions:
///   - {at: 2s, kill-pod: {service: web}}
///   - {at: 5s, partition: node-2}
///   - {at: 8s, heal: node-2}
/// ```
///
/// The mesh's verbs: `stop-mesh-ca: {}`, `start-mesh-ca: {}`, `rotate-certs: NODE` (renewed
/// now), `expire-certs: NODE` (dropped as if expired), `revoke-certs: NODE` (revoked: every
/// proxy refuses them), `skew-clock: {node: NODE, by: 25h}` (the node's clock moved; put right
/// at the end like every other damage).
public struct Experiment: Sendable {
    public struct Load: Sendable {
        public var name: String
        /// The Service, or "" when the load goes to `address`.
        public var service: String
        public var address: SocketAddress?
        public var via = "cluster-ip"
        public var port: Int?
        public var from = "client"
        public var clients = 4
        public var rate = 100.0
        public var keepAlive = false
        public var timeout = 2.0
        public var line: Int
    }

    public enum Verb: String, CaseIterable, Sendable {
        case killPod = "kill-pod", stopNode = "stop-node", startNode = "start-node", partition, heal
        case stopProxy = "stop-proxy", startProxy = "start-proxy", fault, removeFault = "remove-fault"
        case rollout, setImage = "set-image", scale
        case stopMeshCA = "stop-mesh-ca", startMeshCA = "start-mesh-ca", rotateCerts = "rotate-certs", expireCerts = "expire-certs"
        case revokeCerts = "revoke-certs", skewClock = "skew-clock"
    }

    public struct Action: Sendable {
        public var at: Double
        public var verb: Verb
        /// The verb's argument: a name, or a mapping of settings.
        public var target: String
        public var settings: [String: String]
        public var line: Int

        public var description: String {
            let extra = settings.filter { $0.key != "service" || target.isEmpty }.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
            return ([verb.rawValue, target] + extra).filter { !$0.isEmpty }.joined(separator: " ")
        }
    }

    public var name: String
    public var namespace = "default"
    public var duration: Double
    public var apply: [String] = []
    public var loads: [Load] = []
    public var actions: [Action] = []
    public let source: String

    static let verbSettings: [Verb: [String]] = [
        .killPod: ["pod", "service", "signal"], .stopNode: ["node", "mode"], .startNode: ["node"], .partition: ["node"], .heal: ["node"],
        .stopProxy: ["node", "signal"], .startProxy: ["node"],
        .fault: ["name", "service", "sources", "latency", "jitter", "abort", "hang", "bandwidth"], .removeFault: ["name"],
        .rollout: ["deployment"], .setImage: ["deployment", "container", "image"], .scale: ["deployment", "replicas"],
        .stopMeshCA: [], .startMeshCA: [], .rotateCerts: ["node"], .expireCerts: ["node"], .revokeCerts: ["node"], .skewClock: ["node", "by"],
    ]
    /// The setting a plain-string argument stands for (`partition: node-2` is `{node: node-2}`).
    static let mainSetting: [Verb: String] = [
        .killPod: "pod", .stopNode: "node", .startNode: "node", .partition: "node", .heal: "node", .stopProxy: "node",
        .startProxy: "node", .fault: "name", .removeFault: "name", .rollout: "deployment", .setImage: "deployment", .scale: "deployment",
        .stopMeshCA: "", .startMeshCA: "", .rotateCerts: "node", .expireCerts: "node", .revokeCerts: "node", .skewClock: "node",
    ]
    /// Verbs with nothing to name: `- {at: 2s, stop-mesh-ca: {}}` (or any value).
    static let argumentless: Set<Verb> = [.stopMeshCA, .startMeshCA]

    /// Parses and checks a file; every error names its line.
    public static func load(path: String) throws -> Experiment {
        let text: String
        do { text = try FileSystem.readFile(path) } catch { throw KemuError(.notFound, "cannot read experiment \(path)", cause: error) }
        return try parse(text, source: path)
    }

    public static func parse(_ text: String, source: String) throws -> Experiment {
        func fail(_ node: Yams.Node?, _ message: String) -> KemuError {
            KemuError(.invalidArgument, "\(source):\(node?.mark?.line ?? 1): \(message)")
        }
        let root: Yams.Node
        do {
            guard let r = try Yams.compose(yaml: text) else { throw fail(nil, "empty experiment") }
            root = r
        } catch let error as KemuError { throw error } catch {
            throw KemuError(.invalidArgument, "\(source): not valid YAML: \(error)")
        }
        guard let top = root.mapping else { throw fail(root, "an experiment is a mapping (name, duration, load, actions)") }
        let known = ["name", "description", "namespace", "apply", "duration", "load", "actions"]
        for (key, _) in top where !known.contains(key.string ?? "") {
            throw fail(key, "unknown field \"\(key.string ?? "")\" (fields: \(known.joined(separator: ", ")))")
        }
        let fileName = URL(fileURLWithPath: source).deletingPathExtension().lastPathComponent
        guard let durationNode = top["duration"] else { throw fail(root, "duration is required (like 10s)") }
        guard let duration = seconds(durationNode.string ?? ""), duration > 0, duration <= 3600 else {
            throw fail(durationNode, "duration: \"\(durationNode.string ?? "")\" is not a time from 1ms to 1h (like 10s or 500ms)")
        }
        var experiment = Experiment(name: top["name"]?.string ?? fileName, duration: duration, source: source)
        if let ns = top["namespace"]?.string { experiment.namespace = ns }
        if let apply = top["apply"] {
            let files = apply.sequence.map { $0.compactMap(\.string) } ?? apply.string.map { [$0] } ?? []
            let base = URL(fileURLWithPath: source).deletingLastPathComponent()
            experiment.apply = files.map { $0.hasPrefix("/") ? $0 : base.appendingPathComponent($0).path }
            for (file, path) in zip(files, experiment.apply) where !FileSystem.exists(path) {
                throw fail(apply, "apply: \(file) does not exist (looked for \(path))")
            }
        }
        guard let loadNode = top["load"] else { throw fail(root, "load is required: the clients whose connections the report counts") }
        for (i, node) in (loadNode.sequence.map(Array.init) ?? [loadNode]).enumerated() {
            experiment.loads.append(try parseLoad(node, index: i, fail))
        }
        for node in top["actions"]?.sequence ?? [] {
            let action = try parseAction(node, fail)
            guard action.at <= duration else {
                throw fail(node, "at \(format(action.at)) is after the experiment ends (duration \(format(duration)))")
            }
            experiment.actions.append(action)
        }
        experiment.actions.sort { $0.at < $1.at }
        return experiment
    }

    private static func parseLoad(_ node: Yams.Node, index: Int, _ fail: (Yams.Node?, String) -> KemuError) throws -> Load {
        guard let m = node.mapping else { throw fail(node, "a load is a mapping (service, from, clients, rate, mode)") }
        let known = ["name", "service", "address", "via", "port", "from", "clients", "rate", "mode", "timeout"]
        for (key, _) in m where !known.contains(key.string ?? "") {
            throw fail(key, "unknown load field \"\(key.string ?? "")\" (fields: \(known.joined(separator: ", ")))")
        }
        let service = m["service"]?.string ?? ""
        guard service.isEmpty != (m["address"] == nil) else { throw fail(node, "load: a service (by name) or an address (IP:PORT), one of them") }
        var load = Load(name: m["name"]?.string ?? "load-\(index + 1)", service: service, line: node.mark?.line ?? 0)
        if let address = m["address"] {
            guard let a = address.string.flatMap({ SocketAddress($0) }) else { throw fail(address, "address: \"\(address.string ?? "")\" is not IP:PORT") }
            load.address = a
        }
        if let via = m["via"] {
            guard let v = via.string, ["cluster-ip", "node-port", "load-balancer"].contains(v) else {
                throw fail(via, "via: \"\(via.string ?? "")\" is not cluster-ip, node-port or load-balancer")
            }
            load.via = v
        }
        if let port = m["port"] {
            guard let p = port.int, (1...65535).contains(p) else { throw fail(port, "port: not a port number") }
            load.port = p
        }
        if let from = m["from"]?.string { load.from = from }
        if let clients = m["clients"] {
            guard let c = clients.int, (1...256).contains(c) else { throw fail(clients, "clients: a number from 1 to 256") }
            load.clients = c
        }
        if let rate = m["rate"] {
            guard let r = rate.float, r >= 0, r <= 100_000 else { throw fail(rate, "rate: requests per second, 0 to 100000") }
            load.rate = r
        }
        if let mode = m["mode"] {
            guard let v = mode.string, ["connect", "keep-alive"].contains(v) else { throw fail(mode, "mode: connect or keep-alive") }
            load.keepAlive = v == "keep-alive"
        }
        if let timeout = m["timeout"] {
            guard let t = seconds(timeout.string ?? ""), t > 0 else { throw fail(timeout, "timeout: a time like 2s") }
            load.timeout = t
        }
        return load
    }

    private static func parseAction(_ node: Yams.Node, _ fail: (Yams.Node?, String) -> KemuError) throws -> Action {
        guard let m = node.mapping else { throw fail(node, "an action is a mapping: {at: 2s, VERB: TARGET}") }
        guard let atNode = m["at"] else { throw fail(node, "action without at (when, like 2s)") }
        guard let at = seconds(atNode.string ?? "") else { throw fail(atNode, "at: \"\(atNode.string ?? "")\" is not a time (like 2s or 1500ms)") }
        guard at >= 0 else { throw fail(atNode, "at \(atNode.string ?? ""): a time in the past; times count from the start of the load") }
        let verbs = m.filter { $0.key.string != "at" }
        guard verbs.count == 1, let (key, value) = verbs.first else {
            throw fail(node, "an action has one verb besides at (verbs: \(Verb.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        guard let verb = Verb(rawValue: key.string ?? "") else {
            let name = key.string ?? ""
            let near = Verb.allCases.map(\.rawValue).min { distance($0, name) < distance($1, name) } ?? ""
            throw fail(key, "unknown action \"\(name)\"" + (distance(near, name) <= 3 ? " (did you mean \(near)?)" : "")
                       + " (verbs: \(Verb.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        var settings: [String: String] = [:]
        if argumentless.contains(verb) {
            if let map = value.mapping, let k = map.first?.key { throw fail(k, "\(verb.rawValue): takes no settings") }
        } else if let text = value.string {
            settings[mainSetting[verb]!] = text
        } else if let map = value.mapping {
            for (k, v) in map {
                let name = k.string ?? ""
                guard verbSettings[verb]!.contains(name) else {
                    throw fail(k, "\(verb.rawValue): unknown setting \"\(name)\" (settings: \(verbSettings[verb]!.joined(separator: ", ")))")
                }
                settings[name] = v.sequence.map { $0.compactMap(\.string).joined(separator: ",") } ?? v.string ?? ""
            }
        } else {
            throw fail(value, "\(verb.rawValue): a name or a mapping of \(verbSettings[verb]!.joined(separator: ", "))")
        }
        let main = mainSetting[verb]!
        let target = settings.removeValue(forKey: main) ?? ""
        let needsTarget: Set<Verb> = [.stopNode, .startNode, .partition, .heal, .stopProxy, .startProxy, .removeFault, .rollout, .setImage, .scale,
                                      .rotateCerts, .expireCerts, .revokeCerts, .skewClock]
        if needsTarget.contains(verb) && target.isEmpty { throw fail(value, "\(verb.rawValue): which \(main)?") }
        if verb == .killPod && target.isEmpty && settings["service"] == nil { throw fail(value, "kill-pod: a pod name, or {service: NAME} for one of its endpoints") }
        if verb == .setImage && settings["image"] == nil { throw fail(value, "set-image: image is required") }
        if verb == .scale && Int(settings["replicas"] ?? "") == nil { throw fail(value, "scale: replicas (a number) is required") }
        if verb == .skewClock && Mesh.clockSkew(settings["by"] ?? "") == nil {
            throw fail(value, "skew-clock: by \"\(settings["by"] ?? "")\" is not a signed duration like 25h, -90m or 0")
        }
        if verb == .fault {
            for key in ["abort", "hang"] where settings[key] != nil && Double(settings[key]!) == nil { throw fail(value, "fault: \(key) is a percentage") }
            for key in ["latency", "jitter"] where settings[key] != nil && seconds(settings[key]!) == nil { throw fail(value, "fault: \(key) is a time like 100ms") }
            if let b = settings["bandwidth"], Fault.parseRate(b) == nil { throw fail(value, "fault: bandwidth \"\(b)\" is not a rate like 1mbit") }
            if !["abort", "hang", "latency", "bandwidth"].contains(where: { settings[$0] != nil }) {
                throw fail(value, "fault: at least one of abort, hang, latency, bandwidth")
            }
        }
        if let mode = settings["mode"], Chaos.StopMode(rawValue: mode) == nil { throw fail(value, "stop-node: mode \"\(mode)\" is not crash or freeze") }
        if let signal = settings["signal"], (try? Chaos.parseSignal(signal)) == nil { throw fail(value, "\(verb.rawValue): signal \"\(signal)\" is not a signal") }
        return Action(at: at, verb: verb, target: target, settings: settings, line: node.mark?.line ?? 0)
    }

    /// "2s", "1500ms", "1.5s", "1m", or a plain number of seconds.
    public static func seconds(_ text: String) -> Double? {
        let t = text.trimmingCharacters(in: .whitespaces)
        for (suffix, scale) in [("ms", 0.001), ("s", 1.0), ("m", 60.0)] where t.hasSuffix(suffix) {
            return Double(t.dropLast(suffix.count)).map { $0 * scale }
        }
        return Double(t)
    }

    public static func format(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? "\(Int(seconds))s" : "\(Int((seconds * 1000).rounded()))ms"
    }

    /// Edit distance, for "did you mean".
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var row = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in 1...max(b.count, 1) where !b.isEmpty {
                let current = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = current
            }
        }
        return a.isEmpty ? b.count : row[b.count]
    }
}
