import KemuAPI
import KemuClient
import KemuIP

/// Pods on other nodes, as a plain client's proxy needs them: a connection from a pod outside
/// the mesh to a meshed pod on another node travels in plaintext, so no tunnel carries it and
/// the destination's proxy never sees it. The source's proxy judges it instead, as the
/// destination would judge plaintext (no identity): STRICT by the pod's labels, and
/// AuthorizationPolicy with no principal. Followed only once a namespace is meshed: a cluster
/// without the mesh pays nothing.
extension MeshDirectory {
    func followEveryPod(_ client: APIClient) async throws {
        while !anyMeshed { try await Task.sleep(for: .milliseconds(500)) }
        let pods = Informer(client, APIResources.pods, cache: .revisions)
        try await pods.run { self.remotePodEvent($0) }
    }

    func remotePodEvent(_ event: InformerEvent) {
        state.withLock { s in
            switch event {
            case let .added(p), let .updated(_, p):
                let key = p.namespace + "/" + p.name
                if let old = s.remoteAddress.removeValue(forKey: key), s.remote[old]?.name == p.name { s.remote[old] = nil }
                let pod = LocalPod(p)
                guard let address = pod.address, !pod.finished else { return }
                s.remote[address] = pod
                s.remoteAddress[key] = address
            case let .deleted(p):
                let key = p.namespace + "/" + p.name
                if let old = s.remoteAddress.removeValue(forKey: key), s.remote[old]?.name == p.name { s.remote[old] = nil }
            case .synced: break
            }
        }
        if case .synced = event { return }
        changes.continuation.yield()  // the capture's addresses
    }

    /// A running pod anywhere in the cluster, by address (nil until followed, or unknown).
    public func anyPod(_ address: IPv4Address) -> LocalPod? {
        state.withLock { $0.byAddress[address] ?? $0.remote[address] }
    }

    /// For tests: another node's pod as the informer would report it.
    public func setRemotePod(_ pod: LocalPod) {
        remotePodEvent(.added(Self.object(pod)))
    }

    static func object(_ pod: LocalPod) -> JSON {
        var p: JSON = ["apiVersion": "v1", "kind": "Pod", "spec": ["serviceAccountName": .string(pod.serviceAccount)],
                      "status": ["phase": "Running", "podIP": .string(pod.address?.description ?? "")]]
        (p.namespace, p.name, p.labels) = (pod.namespace, pod.name, pod.labels)
        return p
    }
}
