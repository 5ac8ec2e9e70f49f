import KemuAPI
import KemuStore
import Logging

/// Upstream's service account controller and root CA publisher together: every namespace that
/// is not terminating has a `default` ServiceAccount (made again when deleted) and the ConfigMap
/// `kube-root-ca.crt` with the CA that signed the API server's certificate, which in-cluster
/// clients trust (`ca.crt` in every pod's token volume comes from it).
public final class ServiceAccountController: Sendable {
    public static let rootCAConfigMap = "kube-root-ca.crt"
    let store: Store
    /// The cluster CA in PEM; nil (a server without TLS): no ConfigMap.
    let rootCA: String?
    let logger = Logger(label: "kemu.serviceaccounts")

    public init(store: Store, rootCA: String?) {
        self.store = store
        self.rootCA = rootCA
    }

    public func run() async throws {
        try await rewatching(logger) { try await follow() }
    }

    func follow() async throws {
        let revision = store.revision
        let namespaces = try store.watch(WatchFilter("namespaces"), from: revision)
        let accounts = try store.watch(WatchFilter("serviceaccounts"), from: revision)
        let configMaps = try store.watch(WatchFilter("configmaps"), from: revision)
        for namespace in store.list("namespaces").items { reconcile(namespace.name) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { for try await e in namespaces where e.type != .deleted { self.reconcile(e.object.name) } }
            group.addTask { for try await e in accounts where e.object.name == "default" { self.reconcile(e.object.namespace) } }
            group.addTask { for try await e in configMaps where e.object.name == Self.rootCAConfigMap { self.reconcile(e.object.namespace) } }
            try await group.next()
            group.cancelAll()
        }
    }

    /// Makes what `namespace` lacks, unless it is going away.
    func reconcile(_ namespace: String) {
        guard let ns = store.get("namespaces", name: namespace), ns.deletionTimestamp == nil,
              ns[path: "status.phase"]?.string != "Terminating" else { return }
        do {
            try Self.ensureDefaultAccount(store, namespace: namespace)
            if let rootCA { try ensureRootCA(namespace, rootCA) }
        } catch {
            logger.warning("namespace \(namespace): \(error)")
        }
    }

    /// Creates `default` in `namespace` if it is missing (admission does the same, so a pod
    /// created right after its namespace does not race this controller).
    static func ensureDefaultAccount(_ store: Store, namespace: String) throws {
        guard store.get("serviceaccounts", namespace: namespace, name: "default") == nil else { return }
        do { _ = try store.create("serviceaccounts", PodDefaults.defaultServiceAccount(namespace: namespace)) } catch StoreError.alreadyExists {}
    }

    func ensureRootCA(_ namespace: String, _ pem: String) throws {
        let current = store.get("configmaps", namespace: namespace, name: Self.rootCAConfigMap)
        if current?["data"]?["ca.crt"]?.string == pem { return }
        guard current != nil else {
            var map: JSON = ["apiVersion": "v1", "kind": "ConfigMap", "data": ["ca.crt": .string(pem)]]
            map.name = Self.rootCAConfigMap
            map.namespace = namespace
            map.annotations = ["kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."]
            do { _ = try store.create("configmaps", map) } catch StoreError.alreadyExists {}
            return
        }
        _ = try store.modify("configmaps", namespace: namespace, name: Self.rootCAConfigMap) { $0["data"] = ["ca.crt": .string(pem)] }
    }
}
