import KemuAPI
import KemuPKI
import KemuStore
import Synchronization

/// Whether a caller may do what a request asks, as upstream's `--authorization-mode=Node,RBAC`:
/// `system:masters` may do everything; a node agent (`system:node:NAME` in `system:nodes`) what
/// the node authorizer grants it; everyone else what the Roles and ClusterRoles bound to them
/// (or to their groups, `system:authenticated` included) allow. Nothing is allowed otherwise.
public final class Authorizer: Sendable {
    public struct Decision: Sendable, Equatable {
        public var allowed: Bool
        /// Which rule or authorizer decided: shown in SubjectAccessReview status and audit.
        public var reason: String
    }

    let store: Store
    private let compiled = Mutex<CompiledPolicy?>(nil)

    static let policyResources = ["clusterroles", "clusterrolebindings", "roles", "rolebindings"]
        .map { "\($0).rbac.authorization.k8s.io" }

    public init(store: Store) {
        self.store = store
    }

    public func authorize(_ user: Identity, _ a: RequestAttributes) -> Decision {
        let groups = Self.groups(of: user)
        if groups.contains("system:masters") { return Decision(allowed: true, reason: "member of system:masters") }
        if let node = NodeAuthorizer.node(of: user), NodeAuthorizer(store: store, node: node).allows(a) {
            return Decision(allowed: true, reason: "node authorizer: \(user.user)")
        }
        for grant in policy().grants(user: user.user, groups: groups, namespace: a.namespace) {
            if grant.rules.contains(where: { $0.allows(a) }) { return Decision(allowed: true, reason: "RBAC: allowed by \(grant.source)") }
        }
        return Decision(allowed: false, reason: "")
    }

    /// Every rule that applies to `user` in `namespace` ("" for cluster-wide only), with where each
    /// set comes from: SelfSubjectRulesReview's answer and the escalation check's yardstick.
    func grants(_ user: Identity, namespace: String) -> [CompiledPolicy.Grant] {
        var grants = policy().grants(user: user.user, groups: Self.groups(of: user), namespace: namespace)
        if Self.groups(of: user).contains("system:masters") {
            grants.insert(.init(source: "group system:masters", rules: [PolicyRule(verbs: ["*"], apiGroups: ["*"], resources: ["*"]),
                                                                         PolicyRule(verbs: ["*"], nonResourceURLs: ["*"])]), at: 0)
        }
        return grants
    }

    /// Every authenticated caller is also in `system:authenticated`, as upstream adds it.
    static func groups(of user: Identity) -> Set<String> {
        Set(user.groups).union(["system:authenticated"])
    }

    /// The roles and bindings as last stored, compiled again only after one of them changed.
    func policy() -> CompiledPolicy {
        let revision = store.lastWrite(to: Self.policyResources)
        if let current = compiled.withLock({ $0 }), current.revision == revision { return current }
        let fresh = CompiledPolicy(store, revision: revision)
        compiled.withLock { $0 = fresh }
        return fresh
    }
}

/// The RBAC objects in the shape the authorizer asks them: roles by name with their rules
/// (aggregated ClusterRoles with the rules of those they select), bindings by namespace.
struct CompiledPolicy: Sendable {
    struct Grant: Sendable {
        /// `ClusterRoleBinding "x" of ClusterRole "y"`, as upstream's allow reasons say.
        var source: String
        var rules: [PolicyRule]
    }

    struct Subject: Sendable {
        var kind: String, name: String, namespace: String

        func matches(user: String, groups: Set<String>) -> Bool {
            switch kind {
            case "User": name == user
            case "Group": groups.contains(name)
            case "ServiceAccount": user == "system:serviceaccount:\(namespace):\(name)"
            default: false
            }
        }
    }

    struct Binding: Sendable {
        var kind: String, name: String, namespace: String
        var subjects: [Subject]
        var roleKind: String, roleName: String
    }

    let revision: Int64
    var clusterRoles: [String: [PolicyRule]] = [:]
    /// namespace → name → rules
    var roles: [String: [String: [PolicyRule]]] = [:]
    var clusterBindings: [Binding] = []
    /// namespace → its RoleBindings
    var bindings: [String: [Binding]] = [:]

    init(_ store: Store, revision: Int64) {
        self.revision = revision
        let rules = { (o: JSON) in (o["rules"]?.array ?? []).map(PolicyRule.init(json:)) }
        let stored = store.list("clusterroles.rbac.authorization.k8s.io").items
        for role in stored { clusterRoles[role.name] = rules(role) }
        // Aggregation (as upstream's clusterrole-aggregation controller, one level): a ClusterRole
        // with an aggregationRule also holds the rules of every ClusterRole its selectors match.
        for role in stored {
            let selectors = (role[path: "aggregationRule.clusterRoleSelectors"]?.array ?? []).compactMap { try? LabelSelector(json: $0) }
            guard !selectors.isEmpty else { continue }
            for other in stored where other.name != role.name && selectors.contains(where: { $0.matches(other.labels) }) {
                clusterRoles[role.name, default: []] += rules(other)
            }
        }
        for role in store.list("roles.rbac.authorization.k8s.io").items {
            roles[role.namespace, default: [:]][role.name] = rules(role)
        }
        clusterBindings = store.list("clusterrolebindings.rbac.authorization.k8s.io").items.map { Self.binding($0, kind: "ClusterRoleBinding") }
        for b in store.list("rolebindings.rbac.authorization.k8s.io").items {
            bindings[b.namespace, default: []].append(Self.binding(b, kind: "RoleBinding"))
        }
    }

    static func binding(_ o: JSON, kind: String) -> Binding {
        let subjects = (o["subjects"]?.array ?? []).map {
            Subject(kind: $0["kind"]?.string ?? "", name: $0["name"]?.string ?? "", namespace: $0["namespace"]?.string ?? o.namespace)
        }
        return Binding(kind: kind, name: o.name, namespace: o.namespace, subjects: subjects,
                       roleKind: o[path: "roleRef.kind"]?.string ?? "", roleName: o[path: "roleRef.name"]?.string ?? "")
    }

    /// The rule sets bound to this user: every ClusterRoleBinding's, then (in a namespace) that
    /// namespace's RoleBindings', each naming a ClusterRole or a Role of the namespace.
    func grants(user: String, groups: Set<String>, namespace: String) -> [Grant] {
        var result: [Grant] = []
        for b in clusterBindings where b.roleKind == "ClusterRole" && b.subjects.contains(where: { $0.matches(user: user, groups: groups) }) {
            if let rules = clusterRoles[b.roleName] {
                result.append(Grant(source: "ClusterRoleBinding \"\(b.name)\" of ClusterRole \"\(b.roleName)\"", rules: rules))
            }
        }
        guard !namespace.isEmpty else { return result }
        for b in bindings[namespace] ?? [] where b.subjects.contains(where: { $0.matches(user: user, groups: groups) }) {
            let rules = b.roleKind == "ClusterRole" ? clusterRoles[b.roleName] : roles[namespace]?[b.roleName]
            if let rules {
                result.append(Grant(source: "RoleBinding \"\(b.name)/\(namespace)\" of \(b.roleKind) \"\(b.roleName)\"", rules: rules))
            }
        }
        return result
    }
}
