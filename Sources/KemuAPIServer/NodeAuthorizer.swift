import KemuAPI
import KemuPKI
import KemuStore

/// What a node agent (`system:node:NAME` in group `system:nodes`) may do, as upstream's Node
/// authorizer and NodeRestriction admission together: read what its pods and proxy need, write
/// its own Node and the status of the pods bound to it, delete those pods once stopped, and post
/// Events. Anything else falls through to RBAC, which grants nodes nothing by default.
struct NodeAuthorizer {
    let store: Store
    let node: String

    static func node(of user: Identity) -> String? {
        guard user.groups.contains("system:nodes"), user.user.hasPrefix("system:node:") else { return nil }
        let name = String(user.user.dropFirst("system:node:".count))
        return name.isEmpty ? nil : name
    }

    static let readable: Set<String> = ["nodes", "pods", "services", "endpoints", "endpointslices", "faults", "namespaces",
                                        "certificatesigningrequests"]
    static let reads: Set<String> = ["get", "list", "watch"]

    func allows(_ a: RequestAttributes) -> Bool {
        guard a.path == nil else { return false }
        switch (a.resource, a.subresource) {
        case (let r, "") where Self.readable.contains(r) && Self.reads.contains(a.verb):
            return true
        case ("nodes", ""), ("nodes", "status"):
            // Its own Node only; a create names it in the body, which `restrict` checks.
            return ["create", "update", "patch", "delete"].contains(a.verb) && (a.name == node || (a.verb == "create" && a.name.isEmpty))
        case ("pods", "status"):
            return ["update", "patch", "get"].contains(a.verb) && boundHere(a)
        case ("pods", ""):
            return a.verb == "delete" && boundHere(a)
        case ("events", ""):
            return ["create", "update", "patch"].contains(a.verb)
        case ("leases", ""):
            // Its own heartbeat Lease in kube-node-lease (a create names it in the body, which `restrict` checks).
            return a.namespace == "kube-node-lease" && ["get", "create", "update", "patch"].contains(a.verb)
                && (a.name == node || (a.verb == "create" && a.name.isEmpty))
        case ("certificatesigningrequests", ""):
            // Its proxy's mesh certificates (upstream's system:node role creates CSRs too); the
            // signer decides which identities the node may have.
            return a.verb == "create" || (a.verb == "delete" && store.get("certificatesigningrequests.certificates.k8s.io", name: a.name)?[
                path: "spec.username"]?.string == "system:node:\(node)")
        case ("serviceaccounts", "token"):
            // Only tokens bound to a pod that runs here: the TokenRequest handler checks the binding.
            return a.verb == "create"
        case ("configmaps", ""), ("secrets", ""), ("persistentvolumeclaims", ""):
            return a.verb == "get" && referencedHere(a)
        default:
            return false
        }
    }

    /// NodeRestriction on the object written: a node creates or changes only its own Node, and a
    /// pod's status only while the pod stays bound to it.
    func restrict(_ object: JSON, _ resource: APIResource) throws {
        switch resource.resource {
        case "nodes" where object.name != node:
            throw Self.refusal("node \"\(node)\" is not allowed to modify node \"\(object.name)\"", resource, object.name)
        case "leases" where object.name != node:
            throw Self.refusal("node \"\(node)\" may only write its own lease", resource, object.name)
        case "pods" where object[path: "spec.nodeName"]?.string != node:
            throw Self.refusal("node \"\(node)\" can only update pods bound to it", resource, object.name)
        default: break
        }
    }

    static func refusal(_ message: String, _ resource: APIResource, _ name: String) -> APIError {
        APIError(code: 403, reason: "Forbidden", message: "\(resource.qualifiedName) \"\(name)\" is forbidden: \(message)",
                 name: name, kind: resource.resource, group: resource.group)
    }

    func boundHere(_ a: RequestAttributes) -> Bool {
        store.get("pods", namespace: a.namespace, name: a.name)?[path: "spec.nodeName"]?.string == node
    }

    /// Whether a pod bound to this node names the ConfigMap, Secret or claim in a volume or env.
    func referencedHere(_ a: RequestAttributes) -> Bool {
        guard !a.name.isEmpty,
              let here = try? FieldSelector(parsing: "spec.nodeName=\(node)") else { return false }
        return store.list("pods", namespace: a.namespace, fields: here).items.contains { pod in
            Self.references(pod).contains { $0.resource == a.resource && $0.name == a.name }
        }
    }

    /// The ConfigMaps, Secrets and claims a pod spec names (volumes, projected sources, env, envFrom).
    static func references(_ pod: JSON) -> [(resource: String, name: String)] {
        var found: [(String, String)] = []
        func volume(_ v: JSON) {
            if let n = v[path: "configMap.name"]?.string { found.append(("configmaps", n)) }
            if let n = v[path: "secret.secretName"]?.string ?? v[path: "secret.name"]?.string { found.append(("secrets", n)) }
            if let n = v[path: "persistentVolumeClaim.claimName"]?.string { found.append(("persistentvolumeclaims", n)) }
        }
        for v in pod[path: "spec.volumes"]?.array ?? [] {
            volume(v)
            for source in v[path: "projected.sources"]?.array ?? [] { volume(source) }
        }
        let containers = (pod[path: "spec.containers"]?.array ?? []) + (pod[path: "spec.initContainers"]?.array ?? [])
        for c in containers {
            for e in c["env"]?.array ?? [] {
                if let n = e[path: "valueFrom.configMapKeyRef.name"]?.string { found.append(("configmaps", n)) }
                if let n = e[path: "valueFrom.secretKeyRef.name"]?.string { found.append(("secrets", n)) }
            }
            for e in c["envFrom"]?.array ?? [] {
                if let n = e[path: "configMapRef.name"]?.string { found.append(("configmaps", n)) }
                if let n = e[path: "secretRef.name"]?.string { found.append(("secrets", n)) }
            }
        }
        return found
    }
}
