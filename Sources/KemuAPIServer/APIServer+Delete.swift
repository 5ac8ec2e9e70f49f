import HTTPTypes
import Hummingbird
import KemuAPI
import KemuStore

/// Deletion: one object (graceful for pods, with the propagation policies), a collection, an
/// eviction, and what a deleted namespace takes along.
extension APIServer {
    func delete(_ t: Target, _ name: String, _ request: Request) async throws -> Response {
        let (options, dryRun) = try await deleteOptions(request)
        return try Store.$dryRun.withValue(dryRun) { Self.json(t.outward(try delete(t, name, options: options))) }
    }

    /// The DeleteOptions body, and whether it asks for a dry run (kubectl delete --dry-run=server
    /// says so there, not in the query).
    func deleteOptions(_ request: Request) async throws -> (JSON, dryRun: Bool) {
        var options: JSON = [:]
        var request = request
        if let buffer = try? await request.collectBody(upTo: maxBodyBytes), buffer.readableBytes > 0 {
            options = (try? JSON.parse(buffer.readableBytesView)) ?? [:]
        }
        var dryRun = Store.dryRun
        for value in options["dryRun"]?.array ?? [] {
            guard value.string == "All" else { throw APIError.badRequest("dryRun: Unsupported value: \(value.text().prefix(64)): supported values: \"All\"") }
            dryRun = true
        }
        return (options, dryRun)
    }

    /// DELETE on a collection (deletecollection, the python client's `delete_collection_…`):
    /// every object its label and field selectors match, each deleted as on its own with the same
    /// options (pods gracefully, owners' dependents by the propagation policy). The answer lists
    /// what was deleted, as upstream's does. Namespaces have no deletecollection upstream either.
    func deleteCollection(_ t: Target, _ request: Request, _ query: Query) async throws -> Response {
        guard t.resource.resource != "namespaces" else {
            throw APIError.methodNotAllowed("the server does not allow this method on the requested resource")
        }
        let labels = try query["labelSelector"].map(LabelSelector.init(parsing:)) ?? .everything
        let fields = try query["fieldSelector"].map(FieldSelector.init(parsing:)) ?? .everything
        let (options, dryRun) = try await deleteOptions(request)
        let items = store.list(t.resource.qualifiedName, namespace: t.namespace, labels: labels, fields: fields).items
        let deleted: [JSON] = try Store.$dryRun.withValue(dryRun) {
            try items.compactMap { item in
                do { return try delete(t, item.name, options: options) } catch StoreError.notFound { return nil }  // gone meanwhile
            }
        }
        let shown = t.presented ?? t.resource
        return Self.json(["kind": .string(shown.listKind), "apiVersion": .string(shown.groupVersion),
                          "metadata": ["resourceVersion": .string(String(store.revision))], "items": .array(deleted.map(t.outward))])
    }

    /// policy/v1 Eviction (`kubectl drain`): the pod is deleted with the eviction's options, if
    /// its PodDisruptionBudget allows (Budgets.admit).
    func evict(_ t: Target, _ name: String, _ request: Request) async throws -> Response {
        let eviction = try await body(request)
        if let kind = eviction["kind"]?.string, kind != "Eviction" {
            throw APIError.badRequest("the kind \(kind) is not Eviction")
        }
        if let named = eviction[path: "metadata.name"]?.string, !named.isEmpty, named != name {
            throw APIError.badRequest("name in URL does not match name in Eviction object")
        }
        let pod = try get(t, name)
        let options = eviction["deleteOptions"] ?? [:]
        let dryRun = !(options["dryRun"]?.array ?? []).isEmpty || request.uri.queryParameters.get("dryRun") != nil
        try Budgets(store: store).admit(eviction: pod, dryRun: dryRun)
        _ = try delete(t, name, options: options)
        return Self.json(["kind": "Status", "apiVersion": "v1", "metadata": [:], "status": "Success", "code": 201], status: .created)
    }

    func delete(_ t: Target, _ name: String, options: JSON) throws -> JSON {
        // Upstream's NamespaceLifecycle admission: the system namespaces stay.
        if t.resource.resource == "namespaces", ["default", "kube-system", "kube-public", "kube-node-lease"].contains(name) {
            throw APIError(code: 403, reason: "Forbidden", message: "namespaces \"\(name)\" is forbidden: this namespace may not be deleted",
                           name: name, kind: "namespaces")
        }
        if t.resource.resource == "priorityclasses", name.hasPrefix("system-") {
            throw APIError(code: 403, reason: "Forbidden",
                           message: "priorityclasses.scheduling.k8s.io \"\(name)\" is forbidden: this is a system priority class and cannot be deleted",
                           name: name, kind: "priorityclasses")
        }
        let qualified = t.resource.qualifiedName
        let namespace = t.namespace ?? ""
        let uid = options[path: "preconditions.uid"]?.string
        var resourceVersion = options[path: "preconditions.resourceVersion"]?.string.flatMap { Int64($0) }
        let policy = options["propagationPolicy"]?.string ?? (options["orphanDependents"]?.bool == true ? "Orphan" : "Background")
        guard ["Orphan", "Background", "Foreground"].contains(policy) else {
            throw APIError.badRequest("propagationPolicy: Unsupported value: \"\(policy)\": supported values: \"Orphan\", \"Background\", \"Foreground\"")
        }
        // Pods on a node end gracefully: marked now, deleted by their node agent once the
        // processes have stopped (or at once with gracePeriodSeconds 0, kubectl's --force).
        // A pod bound to a node that does not exist goes at once: no agent would ever confirm
        // (upstream's pod garbage collector removes such orphans).
        if t.resource.resource == "pods", let pod = store.get(qualified, namespace: namespace, name: name) {
            let grace = max(options["gracePeriodSeconds"]?.int ?? pod[path: "spec.terminationGracePeriodSeconds"]?.int ?? 30, 0)
            let phase = pod[path: "status.phase"]?.string ?? ""
            let node = pod[path: "spec.nodeName"]?.string ?? ""
            if grace > 0, !node.isEmpty, store.get("nodes", name: node) != nil, phase != "Succeeded", phase != "Failed" {
                if let resourceVersion, resourceVersion != pod.resourceVersion { throw StoreError.conflict(resource: qualified, name: name) }
                return try store.markForDeletion(qualified, namespace: namespace, name: name, gracePeriodSeconds: grace, uid: uid)
            }
        }
        if let owner = store.get(qualified, namespace: namespace, name: name), owner.deletionTimestamp == nil {
            let dependents = store.dependents(of: owner.uid)
            if policy == "Orphan", !dependents.isEmpty {
                // Upstream's order: the owner is marked first (the `orphan` finalizer holds it),
                // so no controller adopts a dependent back while the references go; then it goes.
                _ = try store.modify(qualified, namespace: namespace, name: name) { o in
                    if let uid, uid != o.uid { throw StoreError.conflict(resource: qualified, name: name) }
                    if let resourceVersion, resourceVersion != o.resourceVersion { throw StoreError.conflict(resource: qualified, name: name) }
                    if !o.finalizers.contains("orphan") { o.finalizers.append("orphan") }
                }
                let marked = try store.delete(qualified, namespace: namespace, name: name)
                orphan(store.dependents(of: owner.uid), of: owner.uid)
                _ = try? store.modify(qualified, namespace: namespace, name: name) { o in o.finalizers.removeAll { $0 == "orphan" } }
                return marked
            } else if policy == "Foreground", !dependents.isEmpty {
                // The owner stays, marked, until the garbage collector has deleted its dependents.
                _ = try store.modify(qualified, namespace: namespace, name: name) { o in
                    if let uid, uid != o.uid { throw StoreError.conflict(resource: qualified, name: name) }
                    if let resourceVersion, resourceVersion != o.resourceVersion { throw StoreError.conflict(resource: qualified, name: name) }
                    if !o.finalizers.contains("foregroundDeletion") { o.finalizers.append("foregroundDeletion") }
                }
                resourceVersion = nil
            }
        }
        let gone = try store.delete(qualified, namespace: namespace, name: name, uid: uid, resourceVersion: resourceVersion)
        if t.resource.resource == "namespaces" { purgeNamespace(name) }
        return gone
    }

    /// `propagationPolicy: Orphan`: dependents lose their reference to the owner and stay.
    func orphan(_ dependents: [(resource: String, object: JSON)], of uid: String) {
        for (resource, o) in dependents {
            _ = try? store.modify(resource, namespace: o.namespace, name: o.name) { $0.removeOwnerReference(uid) }
        }
    }

    /// A deleted namespace takes everything in it along (the namespace controller's job).
    func purgeNamespace(_ namespace: String) {
        for r in APIResources.all where r.namespaced && r.stored {
            for o in store.list(r.qualifiedName, namespace: namespace).items {
                _ = try? store.delete(r.qualifiedName, namespace: namespace, name: o.name)
            }
        }
    }
}
