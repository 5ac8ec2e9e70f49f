import Foundation
import KemuAPI
import KemuClient
import KemuNetwork
import KemuSystem
import Logging
import Synchronization

/// What a node agent needs to know besides the API server.
public struct AgentConfig: Sendable {
    public var nodeName: String
    public var cpu: String
    public var memory: String
    public var maxPods: Int
    public var images: ImageCatalog
    /// Per-container logs: DIR/<namespace>_<pod>_<uid>/<container>.log
    public var logDirectory: String
    /// PersistentVolumeClaims' data: DIR/<namespace>/<claim>/ (a symlink into `kemu up
    /// --data-dir` when the cluster keeps its data).
    public var volumeDirectory: String
    /// Per-pod files the agent makes (ServiceAccount token volumes): DIR/<uid>/.
    public var podDirectory: String
    /// Directories no container sees (an empty tmpfs over each in its mount namespace): kemu's
    /// state, keys and kubeconfigs.
    public var hiddenPaths: [String]
    /// The CA that signed the API server's certificate: `ca.crt` in every token volume.
    public var clusterCA: String?
    /// Pods started at once (sandbox, token, processes); more wait their turn.
    public var parallelStarts = 8
    /// Containers' resource limits in control groups (`CgroupTree`), where the machine has them.
    public var cgroups = true

    public init(nodeName: String, cpu: String = "4", memory: String = "8Gi", maxPods: Int = 110, images: ImageCatalog, logDirectory: String,
                volumeDirectory: String, podDirectory: String? = nil, hiddenPaths: [String] = [], clusterCA: String? = nil) {
        self.nodeName = nodeName
        self.cpu = cpu
        self.memory = memory
        self.maxPods = maxPods
        self.images = images
        self.logDirectory = logDirectory
        self.volumeDirectory = volumeDirectory
        self.podDirectory = podDirectory ?? "\(logDirectory)/../pod-files"
        self.hiddenPaths = hiddenPaths
        self.clusterCA = clusterCA
    }
}

/// kemu's kubelet for one emulated node: registers the Node (capacity, addresses, podCIDR, a
/// Ready condition) and keeps its heartbeat, follows the pods bound to it through an informer,
/// and gives each one a `PodWorker` that runs it.
public final class NodeAgent: Sendable {
    public let config: AgentConfig
    let client: APIClient
    let network: ClusterNetwork
    let reaper: ProcessReaper
    let nodeIndex: Int
    let nodeIP: String
    let pods = APIResources.pods
    let nodes = APIResources.nodes
    let events = APIResources.events
    let workers = Mutex<[String: PodWorker]>([:])
    /// Sandbox creation and removal are synchronous netlink work: one thread does them, off
    /// Swift's cooperative pool.
    let networkQueue = DispatchQueue(label: "kemu.agent.network")
    let logger = Logger(label: "kemu.agent")
    /// How often the node's Lease is renewed (upstream: a quarter of its 40 s duration); the node
    /// lifecycle controller marks a node silent for its grace period (5 s) Unknown.
    public let heartbeat: Duration = .seconds(1)
    /// How often the Node's status is posted when nothing in it changed (upstream's
    /// nodeStatusReportFrequency, 5 min; kemu's Ready heartbeat time stays meaningful at 10 s).
    public let statusReportFrequency: Duration = .seconds(10)
    /// Pods whose sandbox and containers are being started at once; the rest wait their turn.
    let starts: StartGate
    /// The Node was marked not Ready by someone else: post the status at the next heartbeat.
    let repost = Mutex(false)
    /// This node's control groups (`kemu-<cluster>-<node>`), recorded in the cluster's state for
    /// `kemu down`; nil where the machine has none kemu can use.
    let cgroups: CgroupTree?

    public init(config: AgentConfig, client: APIClient, network: ClusterNetwork, reaper: ProcessReaper = .shared) throws {
        let index = try Self.nodeIndex(config.nodeName, in: network)
        self.config = config
        self.client = client
        self.network = network
        self.reaper = reaper
        nodeIndex = index
        nodeIP = network.plan.nodeIP(index).description
        starts = StartGate(limit: config.parallelStarts)
        cgroups = config.cgroups ? CgroupTree.make(name: "kemu-\(network.plan.cluster)-\(config.nodeName)") : nil
        if let cgroups {
            try? FileSystem.makeDirectories("\(network.stateDirectory)/cgroups")
            try? FileSystem.writeFile("\(network.stateDirectory)/cgroups/\(config.nodeName)", cgroups.directories.joined(separator: "\n"))
        }
    }

    /// The node's index in the cluster, or an error naming the nodes there are.
    public static func nodeIndex(_ name: String, in network: ClusterNetwork) throws -> Int {
        guard let index = network.nodes.first(where: { $0.name == name })?.index else {
            throw KemuError(.notFound, "node \(name) is not in cluster \(network.plan.cluster) (nodes: \(network.nodes.map(\.name).joined(separator: ", ")))")
        }
        return index
    }

    /// Registers the node, then runs until cancelled: heartbeats and pods. While the API server
    /// cannot be reached (it is restarting too) registration is retried, as kubelet does, rather
    /// than given up; what the server refuses ends the agent.
    public func run() async throws {
        var pause = Duration.milliseconds(200)
        while true {
            do {
                try await register()
                break
            } catch let error where !(error is ClientError) && !(error is CancellationError) {
                logger.warning("cannot register with the API server (\(error)); retrying in \(pause)")
                try await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(2))
            }
        }
        let informer = Informer(client, pods, fields: "spec.nodeName=\(config.nodeName)")
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.keepHeartbeat() }
            group.addTask { try await self.watchOwnNode() }
            group.addTask {
                try await informer.run { event in await self.handle(event, informer) }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// Stops every pod this agent runs (used when the agent itself is told to stop for good).
    public func stopAll() async {
        let all = workers.withLock { w in defer { w.removeAll() }; return Array(w.values) }
        await withTaskGroup(of: Void.self) { group in
            for worker in all { group.addTask { await worker.stop() } }
        }
    }

    func handle(_ event: InformerEvent, _ informer: Informer) async {
        switch event {
        case .added(let pod), .updated(_, let pod):
            if pod.deletionTimestamp != nil {
                await terminate(pod)
                return
            }
            if let phase = pod[path: "status.phase"]?.string, ["Succeeded", "Failed"].contains(phase), workerFor(pod) == nil { return }
            if let worker = workerFor(pod) {
                await worker.update(pod)
            } else {
                let worker = PodWorker(agent: self, pod: pod)
                workers.withLock { $0[pod.uid] = worker }
                await worker.launch()  // pods start side by side, not one after another
            }
        case .deleted(let pod):
            guard let worker = workers.withLock({ $0.removeValue(forKey: pod.uid) }) else { return }
            await worker.stop()
        case .synced:
            // Pods this agent runs that the API no longer has (deleted while the watch was down).
            let live = Set(informer.items.map(\.uid))
            let gone = workers.withLock { w in
                let stale = w.filter { !live.contains($0.key) }
                for key in stale.keys { w.removeValue(forKey: key) }
                return Array(stale.values)
            }
            for worker in gone { await worker.stop() }
            // Sandboxes of this node that belong to no pod any more (deleted while no agent ran).
            let wanted = Set(informer.items.map(PodNames.sandbox))
            let me = config.nodeName
            let removed: [String] = (try? await onNetworkThread { network -> [String] in
                var removed: [String] = []
                for sandbox in try network.pods() where sandbox.node == me && !wanted.contains(sandbox.name) {
                    try network.removePod(sandbox.name, killProcesses: true)
                    removed.append(sandbox.name)
                }
                return removed
            }) ?? []
            if !removed.isEmpty { logger.info("removed sandboxes of pods that are gone: \(removed.joined(separator: ", "))") }
        }
    }

    func workerFor(_ pod: JSON) -> PodWorker? { workers.withLock { $0[pod.uid] } }

    /// A pod marked for deletion: its processes get SIGTERM and the grace period it was given,
    /// its sandbox goes, then the final delete (grace 0, this uid only) removes the object, no
    /// sooner than `finalDeleteAfter` from when it was marked.
    func terminate(_ pod: JSON) async {
        let marked = ContinuousClock.now
        let worker = workers.withLock { $0[pod.uid] }
        if let worker {
            guard await worker.beginTermination() else { return }  // already under way
            await worker.update(pod)
            await worker.stop(grace: pod[path: "metadata.deletionGracePeriodSeconds"]?.int)
        } else if let stale = try? network.pod(PodWorker.sandboxName(pod)) {
            // Left by an earlier run of this agent.
            try? await onNetworkThread { network in try network.removePod(stale.name, killProcesses: true) }
        }
        // As a kubelet (its relist is 1 s): `kubectl delete` waits for a pod of that *name* to
        // go, and a StatefulSet's successor made before it looked kept it waiting for a week.
        try? await Task.sleep(until: marked + Self.finalDeleteAfter)
        do {
            try await client.delete(pods, namespace: pod.namespace, name: pod.name, gracePeriodSeconds: 0, uid: pod.uid)
        } catch let error as ClientError where error.code == 404 || error.code == 409 {
            // Gone already, or a newer pod of that name.
        } catch {
            logger.warning("final delete of \(pod.namespace)/\(pod.name): \(error)")
        }
        _ = workers.withLock { $0.removeValue(forKey: pod.uid) }
    }

    static let finalDeleteAfter: Duration = .seconds(1)
    /// Runs netlink work on the agent's network thread.
    func onNetworkThread<T: Sendable>(_ body: @escaping @Sendable (ClusterNetwork) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            networkQueue.async { [network] in continuation.resume(with: Result { try body(network) }) }
        }
    }

    // MARK: the Node object

    func nodeObject() -> JSON {
        var node: JSON = ["apiVersion": "v1", "kind": "Node"]
        node.name = config.nodeName
        node.labels = ["kubernetes.io/hostname": config.nodeName, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                       "node.kubernetes.io/instance-type": "kemu"]
        if let zone = network.config.zones?[config.nodeName] { node.labels["topology.kubernetes.io/zone"] = zone }
        let podCIDR = network.plan.podCIDR(nodeIndex).description
        node["spec"] = ["podCIDR": .string(podCIDR), "podCIDRs": [.string(podCIDR)]]
        node["status"] = nodeStatus()
        return node
    }

    func pressure() -> NodePressure { NodePressure.read(waitingStarts: starts.waiting) }

    func nodeStatus() -> JSON {
        let pressure = pressure()
        let resources: JSON = ["cpu": .string(config.cpu), "memory": .string(config.memory), "pods": .string(String(config.maxPods))]
        let now = JSON.string(Timestamp.now())
        var kernel = utsname()
        uname(&kernel)
        let release = withUnsafeBytes(of: kernel.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return [
            "capacity": resources, "allocatable": resources,
            "conditions": .array([
                ["type": "Ready", "status": "True", "reason": "KubeletReady", "message": .string(pressure.readyMessage),
                 "lastHeartbeatTime": now, "lastTransitionTime": now],
            ] + pressure.conditions(at: now)),
            "addresses": [["type": "InternalIP", "address": .string(nodeIP)], ["type": "Hostname", "address": .string(config.nodeName)]],
            "daemonEndpoints": ["kubeletEndpoint": ["Port": 10250]],
            "nodeInfo": ["kubeletVersion": "v1.32.0-kemu", "kubeProxyVersion": "v1.32.0-kemu", "operatingSystem": "linux",
                         "architecture": "amd64", "osImage": "kemu emulated node", "kernelVersion": .string(release),
                         "containerRuntimeVersion": "kemu://1", "machineID": "", "systemUUID": "", "bootID": ""],
        ]
    }

    /// Creates the Node, or takes over the one a previous run registered.
    func register() async throws {
        do {
            try await client.create(nodes, nodeObject())
        } catch let error as ClientError where error.code == 409 {
            var existing = try await client.get(nodes, name: config.nodeName)
            let fresh = nodeObject()
            existing["spec"] = fresh["spec"]
            existing["metadata", default: [:]]["labels"] = fresh[path: "metadata.labels"]
            existing = try await client.update(nodes, existing)
            try await postStatus(via: client)
        }
        // The Lease from the start, as kubelet's: made later, by the first heartbeat, it cost a
        // node busy with its first pods three requests (patch, get, create) and came too late.
        do { try await renewLease(via: client) } catch { logger.warning("lease: \(error)") }
        logger.info("node \(config.nodeName) registered (\(nodeIP), pods \(network.plan.podCIDR(nodeIndex)))")
    }

    /// Heartbeats as kubelet's: the Lease renewed every `heartbeat` (one small write), the Node's
    /// status posted when its conditions change or every `statusReportFrequency`.
    func keepHeartbeat() async throws {
        try await withTaskExecutorPreference(Self.heartbeatThread) {
            try await client.withOwnConnection(nice: Self.heartbeatNice) { heartbeat in try await keepHeartbeat(via: heartbeat) }
        }
    }

    /// The heartbeat's own threads (its loop, its connection's event loop), ahead of everything
    /// else on a machine short of CPU: pod starts keep the agent's cooperative pool busy with
    /// sandboxes and spawns, and with a hundred agents and a thousand starting pods at the same
    /// niceness a renewal came later than the 5 s grace. They wake once a second, so their
    /// priority costs the rest nothing.
    static let heartbeatNice: Int32 = -10
    static let heartbeatThread = DedicatedExecutor(name: "kemu-heartbeat", nice: heartbeatNice)

    func keepHeartbeat(via client: APIClient) async throws {
        var (posted, renewing, reported) = (ContinuousClock.now, ContinuousClock.now, pressure())
        while !Task.isCancelled {
            // Every `heartbeat` from the last one's start: a slow server does not space them out.
            try await Task.sleep(until: max(renewing + heartbeat, .now + .milliseconds(100)))
            renewing = .now
            do { try await renewLease(via: client) } catch { logger.warning("lease: \(error)") }
            let took = renewing.duration(to: .now)
            if took > .seconds(2) { logger.warning("lease renewal took \(took): nothing is heard from this node meanwhile (the server's --node-grace-period, 5 s by default, allows it)") }
            let now = pressure()
            let owed = repost.withLock { owed in defer { owed = false }; return owed }
            guard owed || now.differs(from: reported) || posted.duration(to: .now) >= statusReportFrequency else { continue }
            do {
                try await postStatus(via: client)
                (posted, reported) = (.now, now)
            } catch {
                logger.warning("heartbeat: \(error)")
            }
        }
    }

    /// Its own Node, watched: when someone else marks it not Ready (the lifecycle controller, after
    /// heartbeats came late), the status is posted at the next heartbeat rather than in 10 s, as
    /// kubelet compares the server's Node with its own.
    func watchOwnNode() async throws {
        let informer = Informer(client, nodes, fields: "metadata.name=\(config.nodeName)")
        try await informer.run { event in
            guard case .updated(_, let node) = event,
                  let ready = node[path: "status.conditions"]?.array?.first(where: { $0["type"]?.string == "Ready" }),
                  ready["status"]?.string != "True" else { return }
            self.repost.withLock { $0 = true }
        }
    }

    /// kube-node-lease/NODE: renewTime now, made on first use (owned by the Node, so it goes
    /// with it).
    func renewLease(via client: APIClient) async throws {
        let spec: JSON = ["holderIdentity": .string(config.nodeName), "leaseDurationSeconds": 40,
                          "renewTime": .string(Timestamp.formatMicro(Date()))]
        do {
            _ = try await client.patch(APIResources.leases, namespace: "kube-node-lease", name: config.nodeName, ["spec": spec])
        } catch let error as ClientError where error.code == 404 {
            var lease: JSON = ["apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": spec]
            lease.name = config.nodeName
            lease.namespace = "kube-node-lease"
            if let node = try? await client.get(nodes, name: config.nodeName) {
                lease["metadata", default: [:]]["ownerReferences"] = [["apiVersion": "v1", "kind": "Node", "name": .string(node.name),
                                                                       "uid": .string(node.uid)]]
            }
            do { _ = try await client.create(APIResources.leases, lease) } catch let error as ClientError where error.code == 409 {}
        }
    }

    /// The Node's status: fresh heartbeat times, each condition's transition time kept while its
    /// status stays.
    func postStatus(via client: APIClient) async throws {
        var status = nodeStatus()
        let current = try? await client.get(nodes, name: config.nodeName)
        let old = current?[path: "status.conditions"]?.array ?? []
        var conditions = status["conditions"]?.array ?? []
        for i in conditions.indices {
            if let before = old.first(where: { $0["type"] == conditions[i]["type"] }), before["status"] == conditions[i]["status"],
               let since = before["lastTransitionTime"] {
                conditions[i]["lastTransitionTime"] = since
            }
        }
        status["conditions"] = .array(conditions)
        _ = try await client.patch(nodes, name: config.nodeName, ["status": status], subresource: "status")
    }

    // MARK: helpers for workers

    func event(_ pod: JSON, type: String, reason: String, message: String) async {
        let event = Events.make(for: pod, kind: "Pod", type: type, reason: reason, message: message, component: "kubelet",
                                host: config.nodeName, at: Timestamp.now())
        do { try await client.create(events, event) } catch { logger.warning("event \(reason) for \(pod.name): \(error)") }
    }

    /// A container's environment: PATH and HOME from the agent, the downward-API basics, the
    /// kubernetes Service, what its ConfigMaps and Secrets give (`configured`, envFrom and
    /// key refs, read by the worker), then the container's own `env` values and fieldRefs.
    func environment(for pod: JSON, container: JSON, podIP: String, configured: [(name: String, value: String)] = []) -> [String: String] {
        let inherited = ProcessInfo.processInfo.environment
        var env: [String: String] = [
            "PATH": inherited["PATH"] ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root", "HOSTNAME": pod.name,
            "POD_NAME": pod.name, "POD_NAMESPACE": pod.namespace, "POD_IP": podIP, "NODE_NAME": config.nodeName,
            "POD_UID": pod.uid, "HOST_IP": nodeIP,
            "KUBERNETES_SERVICE_HOST": network.plan.kubernetesServiceIP.description, "KUBERNETES_SERVICE_PORT": "443",
            "KUBERNETES_PORT": "tcp://\(network.plan.kubernetesServiceIP):443", "KUBERNETES_SERVICE_PORT_HTTPS": "443",
            "KUBERNETES_PORT_443_TCP": "tcp://\(network.plan.kubernetesServiceIP):443", "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
            "KUBERNETES_PORT_443_TCP_PORT": "443", "KUBERNETES_PORT_443_TCP_ADDR": network.plan.kubernetesServiceIP.description,
        ]
        // envFrom first; an `env` entry of the same name wins, in order.
        let fromSources = Set((container["env"]?.array ?? []).compactMap { $0["name"]?.string })
        for (name, value) in configured where !fromSources.contains(name) { env[name] = value }
        let fromKeys = Dictionary(configured.filter { fromSources.contains($0.name) }.map { ($0.name, $0.value) }) { _, last in last }
        for variable in container["env"]?.array ?? [] {
            guard let name = variable["name"]?.string else { continue }
            if let value = fromKeys[name], variable["valueFrom"] != nil {
                env[name] = value
            } else if let value = variable["value"]?.string {
                env[name] = PodWorker.expand(value, env)
            } else if let path = variable[path: "valueFrom.fieldRef.fieldPath"]?.string {
                env[name] = fieldValue(path, pod: pod, podIP: podIP)
            } else if let reference = variable[path: "valueFrom.resourceFieldRef"] {
                env[name] = (try? resourceValue(reference, pod: pod, container: container)) ?? ""
            }
        }
        return env
    }
}
