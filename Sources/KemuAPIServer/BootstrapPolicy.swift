import KemuAPI
import KemuStore

/// The ClusterRoles and ClusterRoleBindings every cluster starts with, as upstream's bootstrap
/// policy (plugin/pkg/auth/authorizer/rbac/bootstrappolicy) has them for the kinds kemu serves:
/// the user-facing cluster-admin, admin, edit and view (the last three aggregated, so a role
/// labelled `rbac.authorization.k8s.io/aggregate-to-view: "true"` extends view), discovery for
/// every authenticated caller, and least privilege for kemu's own components. Each carries
/// `rbac.authorization.kubernetes.io/autoupdate: "true"` and is put back at every start unless a
/// user set that annotation to "false".
enum BootstrapPolicy {
    static let reads = ["get", "list", "watch"]
    static let writes = ["create", "delete", "deletecollection", "patch", "update"]

    static var clusterRoles: [JSON] {
        let discoveryURLs = ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"]
        return [
            role("cluster-admin", [PolicyRule(verbs: ["*"], apiGroups: ["*"], resources: ["*"]),
                                   PolicyRule(verbs: ["*"], nonResourceURLs: ["*"])]),
            role("admin", aggregatedFrom: "admin", labels: [:], adminRules + editRules + viewRules),
            role("edit", aggregatedFrom: "edit", labels: ["rbac.authorization.k8s.io/aggregate-to-admin": "true"], editRules + viewRules),
            role("view", aggregatedFrom: "view", labels: ["rbac.authorization.k8s.io/aggregate-to-edit": "true"], viewRules),
            role("system:discovery", [PolicyRule(verbs: ["get"], nonResourceURLs: discoveryURLs)]),
            role("system:public-info-viewer", [PolicyRule(verbs: ["get"], nonResourceURLs: ["/healthz", "/livez", "/readyz", "/version", "/version/"])]),
            role("system:basic-user", [
                PolicyRule(verbs: ["create"], apiGroups: ["authorization.k8s.io"], resources: ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
                PolicyRule(verbs: ["create"], apiGroups: ["authentication.k8s.io"], resources: ["selfsubjectreviews"]),
            ]),
            // kube-proxy's: what the node proxy watches, and its Events.
            role("system:node-proxier", [
                PolicyRule(verbs: reads, apiGroups: [""], resources: ["services", "endpoints", "nodes"]),
                PolicyRule(verbs: reads, apiGroups: ["discovery.k8s.io"], resources: ["endpointslices"]),
                PolicyRule(verbs: reads, apiGroups: ["kemu.dev"], resources: ["faults"]),
                PolicyRule(verbs: ["create", "patch", "update"], apiGroups: [""], resources: ["events"]),
                // kemu's node proxy also enforces NetworkPolicy (as kube-router's does): the
                // policies, and the pods and namespaces they select.
                PolicyRule(verbs: reads, apiGroups: [""], resources: ["pods", "namespaces"]),
                PolicyRule(verbs: reads, apiGroups: ["networking.k8s.io"], resources: ["networkpolicies"]),
                // … and the mesh's policies (as ztunnel enforces them).
                PolicyRule(verbs: reads, apiGroups: ["security.istio.io"], resources: ["authorizationpolicies", "peerauthentications"]),
                // … and the routes that split a Service's traffic by weight.
                PolicyRule(verbs: reads, apiGroups: ["gateway.networking.k8s.io"], resources: ["httproutes", "tcproutes"]),
            ]),
            // kemu's emulated cloud load balancer: the proxier's reads, and a Service's status only.
            role("system:kemu-lb", [
                PolicyRule(verbs: reads, apiGroups: [""], resources: ["services", "endpoints", "nodes"]),
                PolicyRule(verbs: ["patch", "update"], apiGroups: [""], resources: ["services/status"]),
                PolicyRule(verbs: reads, apiGroups: ["discovery.k8s.io"], resources: ["endpointslices"]),
                PolicyRule(verbs: reads, apiGroups: ["kemu.dev"], resources: ["faults"]),
                PolicyRule(verbs: ["create", "patch", "update"], apiGroups: [""], resources: ["events"]),
            ]),
        ]
    }

    static var clusterRoleBindings: [JSON] {
        [
            binding("cluster-admin", role: "cluster-admin", [("Group", "system:masters")]),
            binding("system:discovery", role: "system:discovery", [("Group", "system:authenticated")]),
            binding("system:basic-user", role: "system:basic-user", [("Group", "system:authenticated")]),
            binding("system:public-info-viewer", role: "system:public-info-viewer",
                    [("Group", "system:authenticated"), ("Group", "system:unauthenticated")]),
            binding("system:node-proxier", role: "system:node-proxier", [("User", "system:kube-proxy")]),
            binding("system:kemu-lb", role: "system:kemu-lb", [("User", "system:kemu-lb")]),
        ]
    }

    /// view: reads of everything a namespace holds except Secrets (which would hand out tokens).
    static let viewRules: [PolicyRule] = [
        PolicyRule(verbs: reads, apiGroups: [""], resources: [
            "configmaps", "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status", "pods", "pods/log", "pods/status",
            "replicationcontrollers", "replicationcontrollers/scale", "replicationcontrollers/status", "serviceaccounts",
            "services", "services/status", "events", "namespaces", "namespaces/status", "limitranges", "resourcequotas",
        ]),
        PolicyRule(verbs: reads, apiGroups: ["apps"], resources: [
            "controllerrevisions", "daemonsets", "daemonsets/status", "deployments", "deployments/scale", "deployments/status",
            "replicasets", "replicasets/scale", "replicasets/status", "statefulsets", "statefulsets/scale", "statefulsets/status",
        ]),
        PolicyRule(verbs: reads, apiGroups: ["discovery.k8s.io"], resources: ["endpointslices"]),
        PolicyRule(verbs: reads, apiGroups: ["batch"], resources: ["cronjobs", "cronjobs/status", "jobs", "jobs/status"]),
        PolicyRule(verbs: reads, apiGroups: ["networking.k8s.io"], resources: ["ingresses", "ingresses/status", "networkpolicies"]),
        PolicyRule(verbs: reads, apiGroups: ["policy"], resources: ["poddisruptionbudgets", "poddisruptionbudgets/status"]),
        PolicyRule(verbs: reads, apiGroups: ["kemu.dev"], resources: ["faults"]),
        PolicyRule(verbs: reads, apiGroups: ["security.istio.io"], resources: ["authorizationpolicies", "peerauthentications"]),
        PolicyRule(verbs: reads, apiGroups: ["gateway.networking.k8s.io"], resources: ["httproutes", "httproutes/status", "tcproutes", "tcproutes/status"]),
        PolicyRule(verbs: reads, apiGroups: ["metrics.k8s.io"], resources: ["pods", "nodes"]),
        PolicyRule(verbs: reads, apiGroups: ["events.k8s.io"], resources: ["events"]),
    ]

    /// edit: writes of a namespace's workloads, Services, configuration and Secrets, exec and logs;
    /// not its roles or bindings.
    static let editRules: [PolicyRule] = [
        PolicyRule(verbs: writes, apiGroups: [""], resources: [
            "pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "configmaps", "endpoints",
            "persistentvolumeclaims", "replicationcontrollers", "replicationcontrollers/scale", "secrets", "serviceaccounts",
            "services", "services/proxy",
        ]),
        PolicyRule(verbs: reads, apiGroups: [""], resources: ["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets", "services/proxy"]),
        PolicyRule(verbs: ["create"], apiGroups: [""], resources: ["pods/eviction", "serviceaccounts/token"]),
        PolicyRule(verbs: writes, apiGroups: ["apps"], resources: [
            "daemonsets", "deployments", "deployments/rollback", "deployments/scale", "replicasets", "replicasets/scale",
            "statefulsets", "statefulsets/scale",
        ]),
        PolicyRule(verbs: writes, apiGroups: ["discovery.k8s.io"], resources: ["endpointslices"]),
        PolicyRule(verbs: writes, apiGroups: ["batch"], resources: ["cronjobs", "jobs"]),
        PolicyRule(verbs: writes, apiGroups: ["networking.k8s.io"], resources: ["ingresses", "networkpolicies"]),
        PolicyRule(verbs: writes, apiGroups: ["policy"], resources: ["poddisruptionbudgets"]),
        PolicyRule(verbs: writes, apiGroups: ["kemu.dev"], resources: ["faults"]),
        PolicyRule(verbs: writes, apiGroups: ["security.istio.io"], resources: ["authorizationpolicies", "peerauthentications"]),
        PolicyRule(verbs: writes, apiGroups: ["gateway.networking.k8s.io"], resources: ["httproutes", "tcproutes"]),
    ]

    /// admin: edit, plus the namespace's Roles and RoleBindings (within what it holds itself).
    static let adminRules: [PolicyRule] = [
        PolicyRule(verbs: writes + reads, apiGroups: ["rbac.authorization.k8s.io"], resources: ["roles", "rolebindings"]),
        PolicyRule(verbs: ["create"], apiGroups: ["authorization.k8s.io"], resources: ["localsubjectaccessreviews"]),
    ]

    static let defaultsLabel = ["kubernetes.io/bootstrapping": "rbac-defaults"]
    static let autoupdate = "rbac.authorization.kubernetes.io/autoupdate"

    static func role(_ name: String, aggregatedFrom: String? = nil, labels: [String: String] = [:], _ rules: [PolicyRule]) -> JSON {
        var o: JSON = ["apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "rules": .array(rules.map(\.json))]
        o.name = name
        o.labels = defaultsLabel.merging(labels) { a, _ in a }
        o.annotations = [autoupdate: "true"]
        if let aggregatedFrom {
            o["aggregationRule"] = ["clusterRoleSelectors": [["matchLabels": JSON.stringMapJSON(["rbac.authorization.k8s.io/aggregate-to-\(aggregatedFrom)": "true"])]]]
        }
        return o
    }

    static func binding(_ name: String, role: String, _ subjects: [(kind: String, name: String)]) -> JSON {
        var o: JSON = ["apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                       "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": .string(role)],
                       "subjects": .array(subjects.map { ["apiGroup": "rbac.authorization.k8s.io", "kind": .string($0.kind), "name": .string($0.name)] })]
        o.name = name
        o.labels = defaultsLabel
        o.annotations = [autoupdate: "true"]
        return o
    }

    /// Creates what is missing and puts back what changed, unless autoupdate was turned off.
    static func reconcile(_ store: Store) throws {
        for (resource, objects) in [("clusterroles.rbac.authorization.k8s.io", clusterRoles),
                                    ("clusterrolebindings.rbac.authorization.k8s.io", clusterRoleBindings)] {
            for desired in objects {
                guard let current = store.get(resource, name: desired.name) else {
                    _ = try store.create(resource, desired)
                    continue
                }
                guard current.annotations[autoupdate] != "false" else { continue }
                let keys = ["rules", "aggregationRule", "roleRef", "subjects"]
                if keys.contains(where: { current[$0] != desired[$0] }) {
                    _ = try store.modify(resource, name: desired.name) { o in
                        for key in keys { o[key] = desired[key] }
                    }
                }
            }
        }
    }
}
