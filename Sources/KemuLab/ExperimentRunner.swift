import Foundation
import Glibc
import KemuAgent
import KemuCluster
import KemuAPI
import KemuClient
import KemuIP
import KemuNetwork
import KemuSystem
import Synchronization
import Yams

/// Runs one experiment against a running cluster.
public final class ExperimentRunner: @unchecked Sendable {
    let experiment: Experiment
    let chaos: Chaos
    var client: APIClient { chaos.cluster.client }
    /// What to undo if the experiment ends with its damage in place: description → action.
    private var undo: [(key: String, run: () async throws -> Void)] = []
    var children: [pid_t] = []
    /// Set by SIGINT or SIGTERM: the timeline stops, and what it broke is undone.
    private let interrupted = Atomic<Bool>(false)

    struct Target {
        var load: Experiment.Load
        var address: SocketAddress
        var namespace: NetworkNamespace
        var service: String
    }

    public init(_ experiment: Experiment, chaos: Chaos) {
        self.experiment = experiment
        self.chaos = chaos
    }

    public func run() async throws -> ExperimentReport {
        for path in experiment.apply { try await applyManifests(path) }
        let targets = try await experiment.loads.asyncMap { try await self.resolve($0) }
        let services = Set(targets.map(\.service).filter { !$0.isEmpty })
        var report = ExperimentReport(experiment: experiment, loads: targets.map { ($0.load, "\($0.address)") })
        let retriesBefore = proxyCounter("kemu_proxy_connect_retries_total", services)
        let replaysBefore = proxyCounter("kemu_proxy_replays_total", services)
        let signals = [SIGINT, SIGTERM].map { signo -> any DispatchSourceSignal in
            signal(signo, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signo)
            source.setEventHandler { self.interrupted.store(true, ordering: .relaxed) }
            source.resume()
            return source
        }
        defer { for s in signals { s.cancel() } }
        let start = Date().timeIntervalSince1970
        report.start = start
        let outputs = try targets.map { try startLoad($0) }
        let sampler = Task { await self.sampleEndpoints(services, until: start + experiment.duration + 1) }
        var failure: (any Error)?
        do {
            for action in experiment.actions {
                let wait = start + action.at - Date().timeIntervalSince1970
                if wait > 0 { try await sleep(wait) }
                let record = try await perform(action, services: services)
                report.actions.append(record)
            }
            let left = start + experiment.duration - Date().timeIntervalSince1970
            if left > 0 { try await sleep(left) }
        } catch {
            failure = error
            for pid in children { kill(pid, SIGTERM) }
        }
        for (i, output) in outputs.enumerated() { report.requests[i] = output.finish() }
        report.samples = await sampler.value
        let healed = await healEverything()
        report.healed = healed
        report.retries = Self.growth(from: retriesBefore, to: proxyCounter("kemu_proxy_connect_retries_total", services))
        report.replays = Self.growth(from: replaysBefore, to: proxyCounter("kemu_proxy_replays_total", services))
        report.histories = proxyHistories()
        if let failure {
            if !healed.isEmpty { FileHandle.standardError.write(Data("kemu: experiment stopped; undone: \(healed.joined(separator: "; "))\n".utf8)) }
            throw failure
        }
        return report
    }

    private func sleep(_ seconds: Double) async throws {
        let end = Date().timeIntervalSince1970 + seconds
        while Date().timeIntervalSince1970 < end {
            if interrupted.load(ordering: .relaxed) { throw KemuError(.invalidState, "interrupted") }
            try await Task.sleep(for: .milliseconds(min(50, max(1, Int((end - Date().timeIntervalSince1970) * 1000)))))
        }
    }

    // MARK: actions

    /// Does one action of the timeline; returns what the report needs to judge the cluster's
    /// reaction, timed at the moment of the damage (the signal, the link going down).
    func perform(_ action: Experiment.Action, services: Set<String>) async throws -> ExperimentReport.ActionRecord {
        let ns = experiment.namespace
        var record = ExperimentReport.ActionRecord(action: action, time: Date().timeIntervalSince1970)
        do {
            switch action.verb {
            case .killPod:
                let pod = action.target.isEmpty ? try await endpointPod(of: action.settings["service"] ?? "") : action.target
                record.detail = "pod \(pod)"
                record.victims = try await endpoints(ofPod: pod, services: services)
                record.time = try await chaos.killPod(pod, namespace: ns, signal: try Chaos.parseSignal(action.settings["signal"] ?? "KILL")).at.timeIntervalSince1970
            case .stopNode:
                record.victims = try await endpoints(onNode: action.target, services: services)
                record.excludedNode = action.target
                record.time = try await chaos.stopNode(action.target, mode: Chaos.StopMode(rawValue: action.settings["mode"] ?? "crash") ?? .crash).timeIntervalSince1970
                remember("stop-node \(action.target)") { try await self.chaos.startNode(action.target) }
            case .startNode:
                try await chaos.startNode(action.target)
                forget("stop-node \(action.target)")
            case .partition:
                record.victims = try await endpoints(onNode: action.target, services: services)
                record.excludedNode = action.target
                record.time = try await chaos.partition(action.target).timeIntervalSince1970
                remember("partition \(action.target)") { try await self.chaos.heal(action.target) }
            case .heal:
                try await chaos.heal(action.target)
                forget("partition \(action.target)")
            case .stopProxy:
                record.excludedNode = action.target
                try await chaos.stopProxy(action.target, signal: try Chaos.parseSignal(action.settings["signal"] ?? "TERM"))
                remember("stop-proxy \(action.target)") { try await self.chaos.startProxy(action.target) }
            case .startProxy:
                try await chaos.startProxy(action.target)
                forget("stop-proxy \(action.target)")
            case .stopMeshCA:
                try await chaos.stopMeshCA()
                remember("stop-mesh-ca") { try await self.chaos.startMeshCA() }
            case .startMeshCA:
                try await chaos.startMeshCA()
                forget("stop-mesh-ca")
            case .rotateCerts:
                try await chaos.rotateCertificates(action.target)
            case .expireCerts:
                try await chaos.expireCertificates(action.target)
            case .revokeCerts:
                record.detail = "\(try await chaos.revokeCertificates(action.target)) certificate(s)"
            case .skewClock:
                let before = await chaos.clockSkew(action.target)
                try await chaos.skewClock(action.target, by: action.settings["by"] ?? "")
                record.detail = "by \(action.settings["by"] ?? "")"
                if Mesh.clockSkew(action.settings["by"] ?? "") == 0 {
                    forget("skew-clock \(action.target)")
                } else if before == 0 {
                    remember("skew-clock \(action.target)") { try await self.chaos.skewClock(action.target, by: "0") }
                }
            case .fault:
                let fault = try await makeFault(action)
                record.detail = fault.summary
                try await chaos.injectFault(fault)
                remember("fault \(fault.name)") { try await self.chaos.removeFault(fault.name, namespace: ns) }
            case .removeFault:
                try await chaos.removeFault(action.target, namespace: ns)
                forget("fault \(action.target)")
            case .rollout:
                try await patchDeployment(action.target, ["spec": ["template": ["metadata": ["annotations": ["kubectl.kubernetes.io/restartedAt": .string(Timestamp.now())]]]]])
            case .setImage:
                let deployment = try await client.get(APIResources.deployments, namespace: ns, name: action.target)
                var containers = deployment[path: "spec.template.spec.containers"]?.array ?? []
                guard let i = containers.firstIndex(where: { action.settings["container"] == nil || $0["name"]?.string == action.settings["container"] }) else {
                    throw KemuError(.notFound, "deployment \(action.target) has no container \(action.settings["container"] ?? "")")
                }
                containers[i]["image"] = .string(action.settings["image"] ?? "")
                try await patchDeployment(action.target, ["spec": ["template": ["spec": ["containers": .array(containers)]]]])
            case .scale:
                guard let replicas = action.settings["replicas"].flatMap({ Int32($0) }), replicas >= 0 else {
                    throw KemuError(.invalidArgument, "scale: replicas \"\(action.settings["replicas"] ?? "")\" is not a number from 0 to \(Int32.max)")
                }
                try await patchDeployment(action.target, ["spec": ["replicas": .int(Int64(replicas))]])
            }
        } catch {
            throw KemuError(.invalidState, "\(experiment.source):\(action.line): \(action.description): \(error)")
        }
        return record
    }

    private func remember(_ key: String, _ run: @escaping () async throws -> Void) { undo.append((key, run)) }
    private func forget(_ key: String) { undo.removeAll { $0.key == key } }

    /// Undoes, newest first, whatever the timeline left broken; returns what it undid.
    func healEverything() async -> [String] {
        var done: [String] = []
        for (key, run) in undo.reversed() {
            do {
                try await run()
                done.append(key)
            } catch {
                FileHandle.standardError.write(Data("kemu: could not undo \(key): \(error)\n".utf8))
            }
        }
        undo.removeAll()
        return done
    }

    private func makeFault(_ action: Experiment.Action) async throws -> Fault {
        let s = action.settings
        guard let service = s["service"] ?? experiment.loads.first(where: { !$0.service.isEmpty })?.service else {
            throw KemuError(.invalidArgument, "which service? (no load names one: give fault a service)")
        }
        var sources: [String] = []
        for source in (s["sources"] ?? "").split(separator: ",") { sources.append(try await chaos.sourceRange(String(source), namespace: experiment.namespace)) }
        return Fault(namespace: experiment.namespace, name: action.target.isEmpty ? "experiment-\(action.line)" : action.target,
                     service: service, sources: sources,
                     latencyMilliseconds: Int((Experiment.seconds(s["latency"] ?? "0") ?? 0) * 1000),
                     jitterMilliseconds: Int((Experiment.seconds(s["jitter"] ?? "0") ?? 0) * 1000),
                     abortPercent: Double(s["abort"] ?? "0") ?? 0, hangPercent: Double(s["hang"] ?? "0") ?? 0,
                     bytesPerSecond: s["bandwidth"].flatMap(Fault.parseRate))
    }

    private func patchDeployment(_ name: String, _ patch: JSON) async throws {
        do {
            _ = try await client.patch(APIResources.deployments, namespace: experiment.namespace, name: name, patch)
        } catch let error as ClientError where error.code == 404 {
            throw KemuError(.notFound, "deployment \(experiment.namespace)/\(name) does not exist")
        }
    }

    // MARK: endpoints

    private func slices(_ service: String) async throws -> [JSON] {
        try await client.list(APIResources.endpointSlices, namespace: experiment.namespace, labels: "kubernetes.io/service-name=\(service)").items
    }

    /// A ready endpoint's pod of a Service, chosen at random.
    private func endpointPod(of service: String) async throws -> String {
        let pods = try await slices(service).flatMap { $0["endpoints"]?.array ?? [] }
            .filter { $0[path: "conditions.ready"]?.bool ?? true }.compactMap { $0[path: "targetRef.name"]?.string }
        guard let pod = pods.randomElement() else { throw KemuError(.notFound, "service \(service) has no ready endpoint to kill") }
        return pod
    }

    private func endpointAddresses(_ services: Set<String>, where include: (JSON) -> Bool) async throws -> Set<String> {
        var result: Set<String> = []
        for service in services {
            for slice in try await slices(service) {
                let ports = (slice["ports"]?.array ?? []).compactMap { $0["port"]?.int }
                for e in slice["endpoints"]?.array ?? [] where include(e) {
                    for ip in (e["addresses"]?.array ?? []).compactMap(\.string) { for p in ports { result.insert("\(ip):\(p)") } }
                }
            }
        }
        return result
    }

    private func endpoints(ofPod pod: String, services: Set<String>) async throws -> Set<String> {
        try await endpointAddresses(services) { $0[path: "targetRef.name"]?.string == pod }
    }

    private func endpoints(onNode node: String, services: Set<String>) async throws -> Set<String> {
        _ = try NodeAgent.nodeIndex(node, in: chaos.network)
        return try await endpointAddresses(services) { $0["nodeName"]?.string == node }
    }

    /// Every 100 ms: the ready endpoints of the loads' Services, as the API has them.
    func sampleEndpoints(_ services: Set<String>, until end: Double) async -> [(Double, Int)] {
        var samples: [(Double, Int)] = []
        while Date().timeIntervalSince1970 < end {
            let now = Date().timeIntervalSince1970
            if let ready = try? await endpointAddresses(services, where: { $0[path: "conditions.ready"]?.bool ?? true }) {
                samples.append((now, ready.count))
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return samples
    }

    // MARK: proxies

    /// Each node's `/endpoints` history (nil for a node whose proxy did not answer).
    func proxyHistories() -> [String: JSON] {
        var result: [String: JSON] = [:]
        for (node, _) in chaos.network.nodes {
            let text = capture(["curl", "-sS", "--max-time", "2", "http://127.0.0.1:10249/endpoints"], in: nodeNamespace(node))
            if let text, let json = try? JSON.parse(Array(text.utf8)) { result[node] = json }
        }
        return result
    }

    /// A per-pool counter for `services`, per proxy (every node's and the load balancer's).
    func proxyCounter(_ name: String, _ services: Set<String>) -> [String: Int] {
        var totals: [String: Int] = [:]
        for host in chaos.network.nodes.map(\.name) + ["lb"] {
            let text = capture(["curl", "-sS", "--max-time", "2", "http://127.0.0.1:10249/metrics"], in: nodeNamespace(host)) ?? ""
            for line in text.split(separator: "\n") where line.hasPrefix(name + "{") {
                guard services.contains(where: { line.contains("service=\"\(experiment.namespace)/\($0)\"") }) else { continue }
                totals[host, default: 0] += Int(line.split(separator: " ").last ?? "") ?? 0
            }
        }
        return totals
    }

    /// How much counters grew; a node whose proxy restarted counts from zero.
    static func growth(from before: [String: Int], to after: [String: Int]) -> Int {
        after.reduce(0) { sum, entry in sum + (entry.value >= (before[entry.key] ?? 0) ? entry.value - (before[entry.key] ?? 0) : entry.value) }
    }

    private func nodeNamespace(_ node: String) -> NetworkNamespace { NetworkNamespace(chaos.network.plan.namespace(node)) }
}
