import KemuAPI

/// What a request path names.
enum APIPath: Equatable {
    /// `/api`, `/apis`: discovery roots.
    case coreRoot, groupsRoot
    /// `/api/v1`, `/apis/apps/v1`: one group version's resource list.
    case groupVersion(group: String, version: String)
    /// A collection (`name` nil) or one object, optionally a subresource of it. `namespace` nil with
    /// a namespaced resource means every namespace.
    case object(APIResource, namespace: String?, name: String?, subresource: String?)
    case version, healthz(String), openAPIRoot, openAPI(group: String, version: String)

    /// `/healthz`, `/livez`, `/readyz`: answered without credentials.
    var isHealth: Bool {
        if case .healthz = self { return true }
        return false
    }

    /// Parses `/api/v1/namespaces/default/pods/web/status` and friends; nil for an unknown path.
    init?(_ path: String) {
        var parts = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        switch parts.first {
        case "version": self = .version; return
        case "healthz", "livez", "readyz": self = .healthz(parts[0]); return
        case "openapi":
            guard parts.count >= 2, parts[1] == "v3" else { return nil }
            if parts.count == 2 { self = .openAPIRoot; return }
            if parts.count == 4, parts[2] == "api" { self = .openAPI(group: "", version: parts[3]); return }
            if parts.count == 5, parts[2] == "apis" { self = .openAPI(group: parts[3], version: parts[4]); return }
            return nil
        case "api":
            if parts.count == 1 { self = .coreRoot; return }
            parts.removeFirst()
            self.init(group: "", version: parts.removeFirst(), rest: parts)
        case "apis":
            if parts.count == 1 { self = .groupsRoot; return }
            guard parts.count >= 3 else { return nil }
            parts.removeFirst()
            let group = parts.removeFirst()
            self.init(group: group, version: parts.removeFirst(), rest: parts)
        default:
            return nil
        }
    }

    private init?(group: String, version: String, rest: [String]) {
        guard APIResources.groups.contains(where: { $0.group == group && $0.version == version }) else { return nil }
        if rest.isEmpty { self = .groupVersion(group: group, version: version); return }
        var rest = rest
        var namespace: String?
        // namespaces/{ns}/{resource}/…, but namespaces/{name}[/status] is the Namespace itself.
        if rest.count >= 3, rest[0] == "namespaces", APIResources.find(group: group, version: version, resource: rest[2]) != nil {
            namespace = rest[1]
            rest.removeFirst(2)
        }
        guard let resource = APIResources.find(group: group, version: version, resource: rest[0]) else { return nil }
        if namespace != nil && !resource.namespaced { return nil }
        let name = rest.count > 1 ? rest[1] : nil
        let subresource = rest.count > 2 ? rest[2] : nil
        guard rest.count <= 3, subresource.map(resource.subresources.contains) ?? true else { return nil }
        self = .object(resource, namespace: namespace, name: name, subresource: subresource)
    }
}
