import KemuAPI
import KemuClient
import KemuIP
import Synchronization

/// What a node's proxy knows of the mesh: which namespaces are in it (their label, or the whole
/// cluster), the pods bound to this node (address → namespace and ServiceAccount) and every node's
/// address. Read on the engine's thread for each dial: one lock, no allocation on the hot path.
public final class MeshDirectory: Sendable {
    public struct LocalPod: Sendable, Equatable {
        public var namespace: String
        public var name: String
        public var serviceAccount: String
        public var address: IPv4Address?
        public var finished: Bool
        public var labels: [String: String] = [:]
        public var uid = ""
        /// The node it is bound to (empty: not known).
        public var node = ""

        public init(namespace: String, name: String, serviceAccount: String, address: IPv4Address?, finished: Bool = false,
                    labels: [String: String] = [:]) {
            (self.namespace, self.name, self.serviceAccount, self.address, self.finished, self.labels) =
                (namespace, name, serviceAccount, address, finished, labels)
        }

        /// A pod as its informer reports it.
        init(_ p: JSON) {
            let phase = p[path: "status.phase"]?.string ?? ""
            self.init(namespace: p.namespace, name: p.name, serviceAccount: p[path: "spec.serviceAccountName"]?.string ?? "default",
                      address: p[path: "status.podIP"]?.string.flatMap(IPv4Address.init),
                      finished: phase == "Succeeded" || phase == "Failed", labels: p.labels)
            uid = p.uid
            node = p[path: "spec.nodeName"]?.string ?? ""
        }
    }

    struct State {
        var namespaces: [String: Bool] = [:]
        var pods: [String: LocalPod] = [:]
        var byAddress: [IPv4Address: LocalPod] = [:]
        var nodes: [String: IPv4Address] = [:]
        /// Every running pod of the cluster by address, once a namespace is meshed: what a plain
        /// client's proxy judges another node's meshed pod by (its labels).
        var remote: [IPv4Address: LocalPod] = [:]
        var remoteAddress: [String: IPv4Address] = [:]
        var authorization: [String: AuthorizationPolicy] = [:]
        var peerAuthentication: [String: PeerAuthentication] = [:]
        /// The same, in name order: what each decision reads (made on change, not per dial).
        var authorizationList: [AuthorizationPolicy] = []
        var peerAuthenticationList: [PeerAuthentication] = []
    }

    public let node: String
    public let trustDomain: String
    /// Every namespace is in the mesh (cluster.yaml `mesh: cluster`), whatever its labels.
    public let clusterWide: Bool
    let state = Mutex(State())
    /// Told whenever the set of identities this node's pods need may have changed.
    let changes = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    /// Counts policy changes (AuthorizationPolicy, PeerAuthentication): live connections are
    /// judged again only when it moved, not at every pod update.
    let policyGeneration = Atomic<Int>(0)
    /// Revoked certificates and this node's clock, from the Node objects.
    public let trust: MeshTrust

    public init(node: String, trustDomain: String, clusterWide: Bool) {
        trust = MeshTrust(node: node)
        self.node = node
        self.trustDomain = trustDomain
        self.clusterWide = clusterWide
    }

    /// Whether any namespace is in the mesh (a cheap first test for every dial).
    public var anyMeshed: Bool { clusterWide || meshedCount.load(ordering: .relaxed) > 0 }
    let meshedCount = Atomic<Int>(0)

    public func meshed(namespace: String) -> Bool {
        clusterWide || state.withLock { $0.namespaces[namespace] ?? false }
    }

    /// The pod bound here that has `address`, if it is running.
    public func localPod(_ address: IPv4Address) -> LocalPod? {
        state.withLock { $0.byAddress[address] }
    }

    public func nodeAddress(_ name: String) -> IPv4Address? { state.withLock { $0.nodes[name] } }

    /// The identity of a workload.
    public func identity(_ pod: LocalPod) -> SPIFFEID {
        .workload(domain: trustDomain, namespace: pod.namespace, serviceAccount: pod.serviceAccount)
    }

    /// This node's proxy's own identity (what a tunnel's server side presents).
    public var nodeIdentity: SPIFFEID { .node(domain: trustDomain, name: node) }

    /// The identities this node needs now: its own, and each running meshed pod's.
    public var wantedIdentities: Set<SPIFFEID> {
        let pods = state.withLock { Array($0.pods.values) }
        var ids: Set<SPIFFEID> = [nodeIdentity]
        for pod in pods where !pod.finished && meshed(namespace: pod.namespace) { ids.insert(identity(pod)) }
        return ids
    }

    // MARK: following the API

    func follow(_ client: APIClient) async throws {
        let namespaces = Informer(client, APIResources.namespaces, cache: .revisions)
        let pods = Informer(client, APIResources.pods, fields: "spec.nodeName=\(node)", cache: .revisions)
        let nodes = Informer(client, APIResources.nodes, cache: .revisions)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for resource in ["authorizationpolicies", "peerauthentications"] {
                guard let r = APIResources.find(group: AuthorizationPolicy.group, version: "v1", resource: resource) else { continue }
                let policies = Informer(client, r, cache: .revisions)
                group.addTask { try await policies.run { self.policyEvent($0) } }
            }
            group.addTask { try await namespaces.run { self.namespaceEvent($0) } }
            group.addTask { try await pods.run { self.podEvent($0) } }
            group.addTask { try await nodes.run { self.nodeEvent($0) } }
            group.addTask { try await self.followEveryPod(client) }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    func namespaceEvent(_ event: InformerEvent) {
        state.withLock { s in
            switch event {
            case let .added(n), let .updated(_, n): s.namespaces[n.name] = Mesh.enabled(labels: n.labels)
            case let .deleted(n): s.namespaces[n.name] = nil
            case .synced: break
            }
            meshedCount.store(s.namespaces.values.filter { $0 }.count, ordering: .relaxed)
        }
        changes.continuation.yield()
    }

    func podEvent(_ event: InformerEvent) {
        state.withLock { s in
            switch event {
            case let .added(p), let .updated(_, p):
                let key = p.namespace + "/" + p.name
                if let old = s.pods[key], let address = old.address { s.byAddress[address] = nil }
                let pod = LocalPod(p)
                s.pods[key] = pod
                if let address = pod.address, !pod.finished { s.byAddress[address] = pod }
            case let .deleted(p):
                let key = p.namespace + "/" + p.name
                if let old = s.pods.removeValue(forKey: key), let address = old.address, s.byAddress[address]?.name == old.name {
                    s.byAddress[address] = nil
                }
            case .synced: break
            }
        }
        changes.continuation.yield()
    }

    func nodeEvent(_ event: InformerEvent) {
        state.withLock { s in
            switch event {
            case let .added(n), let .updated(_, n):
                let ip = (n[path: "status.addresses"]?.array ?? []).first { $0["type"]?.string == "InternalIP" }?["address"]?.string
                s.nodes[n.name] = ip.flatMap(IPv4Address.init)
            case let .deleted(n): s.nodes[n.name] = nil
            case .synced: break
            }
        }
        if trust.nodeEvent(event) { changes.continuation.yield() }
    }

    func policyEvent(_ event: InformerEvent) {
        state.withLock { s in
            switch event {
            case let .added(p), let .updated(_, p):
                let key = p.namespace + "/" + p.name
                if p["kind"]?.string == "PeerAuthentication" {
                    s.peerAuthentication[key] = try? PeerAuthentication.parse(p).get()
                } else {
                    s.authorization[key] = try? AuthorizationPolicy.parse(p).get()
                }
            case let .deleted(p):
                let key = p.namespace + "/" + p.name
                s.peerAuthentication[key] = nil
                s.authorization[key] = nil
            case .synced: break
            }
            s.authorizationList = s.authorization.sorted { $0.key < $1.key }.map(\.value)
            s.peerAuthenticationList = s.peerAuthentication.sorted { $0.key < $1.key }.map(\.value)
        }
        policyGeneration.add(1, ordering: .relaxed)
        changes.continuation.yield()
    }

    // MARK: decisions

    /// Whether a pod takes connections only through the mesh (PeerAuthentication STRICT).
    public func strict(_ pod: LocalPod) -> Bool {
        let policies = state.withLock { $0.peerAuthenticationList }
        return PeerAuthentication.strict(policies, namespace: pod.namespace, labels: pod.labels)
    }

    /// Whether every pod of `namespace` is STRICT, known without its labels: a namespace (or
    /// mesh-wide) STRICT that no workload-level PeerAuthentication there can override. A plain
    /// client's proxy refuses those itself instead of dialling another node's pod that would.
    public func strictWhateverTheLabels(namespace: String) -> Bool {
        let policies = state.withLock { $0.peerAuthenticationList }
        if policies.contains(where: { $0.namespace == namespace && $0.selector != nil && $0.mode != .unset }) { return false }
        return PeerAuthentication.strict(policies, namespace: namespace, labels: [:])
    }

    /// What the node's TPROXY capture takes: connections from its meshed pods (`sources`) to
    /// other nodes' meshed pods' own addresses (`destinations`), to carry them in a tunnel as a
    /// Service's are; and connections no proxy has judged to its meshed pods (`sources` again),
    /// to judge them here. `local`: every pod of the node (what comes from one of them came from
    /// no proxy, whatever its port).
    public var captureAddresses: (sources: [IPv4Address], destinations: [IPv4Address], local: [IPv4Address]) {
        let (local, remote) = state.withLock { (Array($0.byAddress.values), Array($0.remote.values)) }
        let sources = local.filter { meshed(namespace: $0.namespace) }.compactMap(\.address)
        let destinations = remote.filter { !$0.node.isEmpty && $0.node != node && meshed(namespace: $0.namespace) }.compactMap(\.address)
        return (sources.sorted(), destinations.sorted(), local.compactMap(\.address).sorted())
    }

    /// The running meshed pods here that are STRICT: what the node's nftables keeps plaintext from.
    public var strictAddresses: [IPv4Address] {
        let pods = state.withLock { Array($0.byAddress.values) }
        return pods.filter { meshed(namespace: $0.namespace) && strict($0) }.compactMap(\.address).sorted()
    }

    /// AuthorizationPolicy's decision on a connection to `destination`'s `port` from `peer`
    /// (nil: plaintext) at `source`.
    public func authorize(peer: SPIFFEID?, source: IPv4Address?, destination: LocalPod, port: UInt16) -> (allowed: Bool, policy: AuthorizationPolicy?) {
        let policies = state.withLock { $0.authorizationList }
        if policies.isEmpty { return (true, nil) }
        let request = AuthorizationPolicy.Request(principal: peer?.principal, sourceNamespace: peer?.workload?.namespace,
                                                  sourceIP: source?.value, port: port)
        return AuthorizationPolicy.evaluate(policies, namespace: destination.namespace, labels: destination.labels, request)
    }

    /// The policies this node knows (for `kemu mesh status`).
    public var policyCounts: (authorization: Int, peerAuthentication: Int) {
        state.withLock { ($0.authorization.count, $0.peerAuthentication.count) }
    }

    /// For tests: a pod as the informer would report it.
    public func setPod(_ pod: LocalPod) {
        state.withLock { s in
            s.pods[pod.namespace + "/" + pod.name] = pod
            if let address = pod.address { s.byAddress[address] = pod }
        }
    }

    public func setNamespace(_ name: String, meshed: Bool) {
        state.withLock { s in
            s.namespaces[name] = meshed
            meshedCount.store(s.namespaces.values.filter { $0 }.count, ordering: .relaxed)
        }
    }
    public func setNode(_ name: String, address: IPv4Address) { state.withLock { $0.nodes[name] = address } }
}
