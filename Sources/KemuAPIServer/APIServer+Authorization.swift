import HTTPTypes
import KemuAPI
import KemuPKI

extension APIServer {
    /// The RBAC question a request asks: the verb from its method (a collection GET is `list`, or
    /// `watch` with `?watch`; a DELETE of a collection `deletecollection`; an exec upgrade is a
    /// `create` of pods/exec, as upstream asks since 1.31) and what the path names.
    static func attributes(_ path: APIPath?, rawPath: String, method: HTTPRequest.Method, watch: Bool) -> RequestAttributes {
        guard case .object(let r, let namespace, let name, let subresource)? = path else {
            let verb = method == .head ? "get" : method.rawValue.lowercased()
            return RequestAttributes(verb: verb, path: rawPath)
        }
        let verb: String
        switch method {
        case .get, .head:
            if subresource == "exec" || subresource == "attach" || subresource == "portforward" { verb = "create" }
            else if watch { verb = "watch" }
            else { verb = name == nil ? "list" : "get" }
        case .post: verb = "create"
        case .put: verb = "update"
        case .patch: verb = "patch"
        case .delete: verb = name == nil ? "deletecollection" : "delete"
        default: verb = method.rawValue.lowercased()
        }
        return RequestAttributes(verb: verb, group: r.group, resource: r.resource, subresource: subresource ?? "",
                                 namespace: namespace ?? "", name: name ?? "")
    }

    /// `kubectl --as=USER --as-group=G`: the request runs as USER in G when the caller may
    /// `impersonate` users (and groups), as upstream's impersonation filter; 403 otherwise.
    func impersonated(_ caller: Identity, _ headers: HTTPFields) throws -> Identity {
        guard let name = HTTPField.Name("Impersonate-User"), let user = headers[name] else {
            if let group = HTTPField.Name("Impersonate-Group"), headers[group] != nil {
                throw APIError(code: 400, reason: "BadRequest", message: "Impersonate-Group requires Impersonate-User")
            }
            return caller
        }
        let groups = HTTPField.Name("Impersonate-Group").map { headers[values: $0] } ?? []
        try authorize(caller, RequestAttributes(verb: "impersonate", resource: "users", name: user))
        for group in groups { try authorize(caller, RequestAttributes(verb: "impersonate", resource: "groups", name: group)) }
        return Identity(user: user, groups: groups)
    }

    /// Throws upstream's 403 unless the caller may: `pods "web" is forbidden: User "viewer" cannot
    /// delete resource "pods" in API group "" in the namespace "default"`.
    @discardableResult
    func authorize(_ user: Identity, _ a: RequestAttributes) throws -> String {
        let decision = authorizer.authorize(user, a)
        guard decision.allowed else { throw Self.forbidden(user, a) }
        return decision.reason
    }

    static func forbidden(_ user: Identity, _ a: RequestAttributes, because: String? = nil) -> APIError {
        var subject = "forbidden"
        if a.path == nil {
            let resource = a.group.isEmpty ? a.resource : "\(a.resource).\(a.group)"
            subject = (a.name.isEmpty ? resource : "\(resource) \"\(a.name)\"") + " is forbidden"
        }
        let reason = because.map { ": \($0)" } ?? ""
        return APIError(code: 403, reason: "Forbidden", message: "\(subject): User \"\(user.user)\" cannot \(a)\(reason)",
                        name: a.name.isEmpty ? nil : a.name, kind: a.path == nil ? a.resource : nil,
                        group: a.path == nil ? a.group : nil)
    }

    static func escalation(_ user: Identity, _ r: APIResource, _ name: String, _ missing: RequestAttributes) -> APIError {
        APIError(code: 403, reason: "Forbidden",
                 message: "\(r.qualifiedName) \"\(name)\" is forbidden: user \"\(user.user)\" is attempting to grant RBAC permissions not currently held: \(missing)",
                 name: name, kind: r.resource, group: r.group)
    }

    /// What admission checks of who writes, after authorization said they may write at all:
    /// NodeRestriction for node agents, and no escalation through Roles and bindings — a caller
    /// may only grant what they hold themselves, unless allowed to `escalate` (roles) or `bind`
    /// (bindings), as upstream's RBAC storage enforces.
    func restrictWriter(_ object: JSON, _ t: Target) throws {
        guard let user = t.user else { return }
        if let node = NodeAuthorizer.node(of: user), !Authorizer.groups(of: user).contains("system:masters") {
            try NodeAuthorizer(store: store, node: node).restrict(object, t.resource)
        }
        guard t.resource.group == "rbac.authorization.k8s.io" else { return }
        let namespace = t.resource.namespaced ? object.namespace : ""
        let held = authorizer.grants(user, namespace: namespace).flatMap(\.rules)
        let covered = { (rules: [PolicyRule]) -> RequestAttributes? in
            for rule in rules {
                for needed in rule.expanded {
                    var asked = needed
                    asked.namespace = namespace
                    if !held.contains(where: { $0.covers(asked) }) { return asked }
                }
            }
            return nil
        }
        switch t.resource.kind {
        case "Role", "ClusterRole":
            let escalate = RequestAttributes(verb: "escalate", group: t.resource.group, resource: t.resource.resource,
                                             namespace: namespace, name: object.name)
            guard !authorizer.authorize(user, escalate).allowed else { return }
            if let missing = covered((object["rules"]?.array ?? []).map(PolicyRule.init(json:))) {
                throw Self.escalation(user, t.resource, object.name, missing)
            }
        case "RoleBinding", "ClusterRoleBinding":
            let kind = object[path: "roleRef.kind"]?.string ?? ""
            let roleName = object[path: "roleRef.name"]?.string ?? ""
            let bind = RequestAttributes(verb: "bind", group: "rbac.authorization.k8s.io",
                                         resource: kind == "Role" ? "roles" : "clusterroles", namespace: namespace,
                                         name: roleName)
            guard !authorizer.authorize(user, bind).allowed else { return }
            let policy = authorizer.policy()
            let rules = (kind == "Role" ? policy.roles[namespace]?[roleName] : policy.clusterRoles[roleName]) ?? []
            if let missing = covered(rules) {
                throw Self.escalation(user, t.resource, object.name, missing)
            }
        default: break
        }
    }
}
