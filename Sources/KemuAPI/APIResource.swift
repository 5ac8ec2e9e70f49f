/// One kind of object the API serves: where it lives (group, version, plural), what it is called
/// (kind, singular, short names), whether it is namespaced, and its subresources.
public struct APIResource: Sendable, Equatable {
    public var group: String
    public var version: String
    /// Plural, lower-case: `deployments`.
    public var resource: String
    public var singular: String
    public var kind: String
    public var namespaced: Bool
    public var shortNames: [String] = []
    public var categories: [String] = []
    /// `status`, `scale`, `log`, `exec`, `binding`, `eviction`
    public var subresources: [String] = []
    /// What may be done to it: every verb for stored kinds; only `create` for the reviews
    /// (SelfSubjectAccessReview, …), which are questions answered at once and never stored.
    public var verbs: [String] = APIResource.allVerbs
    /// Made on each read from what the machine measures, never stored (metrics.k8s.io).
    public var computed = false

    /// Whether objects of it live in the store (false for the create-only reviews and the
    /// computed metrics).
    public var stored: Bool { verbs != ["create"] && !computed }

    /// `v1` or `apps/v1`.
    public var groupVersion: String { group.isEmpty ? version : "\(group)/\(version)" }
    /// The store's key and upstream's message name: `pods`, `deployments.apps`.
    public var qualifiedName: String { group.isEmpty ? resource : "\(resource).\(group)" }
    /// `Deployment.apps`, as in `Deployment.apps "web" is invalid`.
    public var qualifiedKind: String { group.isEmpty ? kind : "\(kind).\(group)" }
    public var listKind: String { kind + "List" }

    public static let allVerbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
}

/// Every resource kemu serves.
public enum APIResources {
    public static let all: [APIResource] = [
        .init(group: "", version: "v1", resource: "namespaces", singular: "namespace", kind: "Namespace", namespaced: false,
              shortNames: ["ns"], subresources: ["status"]),
        .init(group: "", version: "v1", resource: "pods", singular: "pod", kind: "Pod", namespaced: true,
              shortNames: ["po"], categories: ["all"], subresources: ["status", "log", "exec", "binding", "eviction"]),
        .init(group: "", version: "v1", resource: "services", singular: "service", kind: "Service", namespaced: true,
              shortNames: ["svc"], categories: ["all"], subresources: ["status"]),
        .init(group: "", version: "v1", resource: "endpoints", singular: "endpoints", kind: "Endpoints", namespaced: true,
              shortNames: ["ep"]),
        .init(group: "", version: "v1", resource: "nodes", singular: "node", kind: "Node", namespaced: false,
              shortNames: ["no"], subresources: ["status"]),
        .init(group: "", version: "v1", resource: "events", singular: "event", kind: "Event", namespaced: true,
              shortNames: ["ev"]),
        .init(group: "", version: "v1", resource: "configmaps", singular: "configmap", kind: "ConfigMap", namespaced: true,
              shortNames: ["cm"]),
        .init(group: "", version: "v1", resource: "secrets", singular: "secret", kind: "Secret", namespaced: true),
        .init(group: "", version: "v1", resource: "serviceaccounts", singular: "serviceaccount", kind: "ServiceAccount", namespaced: true,
              shortNames: ["sa"], subresources: ["token"]),
        .init(group: "", version: "v1", resource: "resourcequotas", singular: "resourcequota", kind: "ResourceQuota", namespaced: true,
              shortNames: ["quota"], subresources: ["status"]),
        .init(group: "", version: "v1", resource: "limitranges", singular: "limitrange", kind: "LimitRange", namespaced: true,
              shortNames: ["limits"]),
        .init(group: "", version: "v1", resource: "persistentvolumeclaims", singular: "persistentvolumeclaim",
              kind: "PersistentVolumeClaim", namespaced: true, shortNames: ["pvc"], subresources: ["status"]),
        .init(group: "", version: "v1", resource: "replicationcontrollers", singular: "replicationcontroller",
              kind: "ReplicationController", namespaced: true, shortNames: ["rc"], categories: ["all"], subresources: ["status", "scale"]),
        .init(group: "apps", version: "v1", resource: "deployments", singular: "deployment", kind: "Deployment", namespaced: true,
              shortNames: ["deploy"], categories: ["all"], subresources: ["status", "scale"]),
        .init(group: "apps", version: "v1", resource: "replicasets", singular: "replicaset", kind: "ReplicaSet", namespaced: true,
              shortNames: ["rs"], categories: ["all"], subresources: ["status", "scale"]),
        .init(group: "apps", version: "v1", resource: "statefulsets", singular: "statefulset", kind: "StatefulSet", namespaced: true,
              shortNames: ["sts"], categories: ["all"], subresources: ["status", "scale"]),
        .init(group: "apps", version: "v1", resource: "daemonsets", singular: "daemonset", kind: "DaemonSet", namespaced: true,
              shortNames: ["ds"], categories: ["all"], subresources: ["status"]),
        .init(group: "apps", version: "v1", resource: "controllerrevisions", singular: "controllerrevision", kind: "ControllerRevision",
              namespaced: true),
        .init(group: "batch", version: "v1", resource: "jobs", singular: "job", kind: "Job", namespaced: true,
              categories: ["all"], subresources: ["status"]),
        .init(group: "batch", version: "v1", resource: "cronjobs", singular: "cronjob", kind: "CronJob", namespaced: true,
              shortNames: ["cj"], categories: ["all"], subresources: ["status"]),
        .init(group: "rbac.authorization.k8s.io", version: "v1", resource: "clusterroles", singular: "clusterrole",
              kind: "ClusterRole", namespaced: false),
        .init(group: "rbac.authorization.k8s.io", version: "v1", resource: "clusterrolebindings", singular: "clusterrolebinding",
              kind: "ClusterRoleBinding", namespaced: false),
        .init(group: "rbac.authorization.k8s.io", version: "v1", resource: "roles", singular: "role", kind: "Role", namespaced: true),
        .init(group: "rbac.authorization.k8s.io", version: "v1", resource: "rolebindings", singular: "rolebinding",
              kind: "RoleBinding", namespaced: true),
        .init(group: "authorization.k8s.io", version: "v1", resource: "selfsubjectaccessreviews", singular: "selfsubjectaccessreview",
              kind: "SelfSubjectAccessReview", namespaced: false, verbs: ["create"]),
        .init(group: "authorization.k8s.io", version: "v1", resource: "selfsubjectrulesreviews", singular: "selfsubjectrulesreview",
              kind: "SelfSubjectRulesReview", namespaced: false, verbs: ["create"]),
        .init(group: "authorization.k8s.io", version: "v1", resource: "subjectaccessreviews", singular: "subjectaccessreview",
              kind: "SubjectAccessReview", namespaced: false, verbs: ["create"]),
        .init(group: "authorization.k8s.io", version: "v1", resource: "localsubjectaccessreviews", singular: "localsubjectaccessreview",
              kind: "LocalSubjectAccessReview", namespaced: true, verbs: ["create"]),
        .init(group: "authentication.k8s.io", version: "v1", resource: "selfsubjectreviews", singular: "selfsubjectreview",
              kind: "SelfSubjectReview", namespaced: false, verbs: ["create"]),
        .init(group: "networking.k8s.io", version: "v1", resource: "ingresses", singular: "ingress", kind: "Ingress", namespaced: true,
              shortNames: ["ing"], subresources: ["status"]),
        .init(group: "networking.k8s.io", version: "v1", resource: "ingressclasses", singular: "ingressclass", kind: "IngressClass",
              namespaced: false),
        .init(group: "networking.k8s.io", version: "v1", resource: "networkpolicies", singular: "networkpolicy", kind: "NetworkPolicy",
              namespaced: true, shortNames: ["netpol"]),
        .init(group: "policy", version: "v1", resource: "poddisruptionbudgets", singular: "poddisruptionbudget", kind: "PodDisruptionBudget",
              namespaced: true, shortNames: ["pdb"], subresources: ["status"]),
        .init(group: "scheduling.k8s.io", version: "v1", resource: "priorityclasses", singular: "priorityclass", kind: "PriorityClass",
              namespaced: false, shortNames: ["pc"]),
        .init(group: "coordination.k8s.io", version: "v1", resource: "leases", singular: "lease", kind: "Lease", namespaced: true),
        // The core Events under their newer names (EventsV1): one store, converted both ways.
        .init(group: "events.k8s.io", version: "v1", resource: "events", singular: "event", kind: "Event", namespaced: true,
              shortNames: ["ev"]),
        .init(group: "discovery.k8s.io", version: "v1", resource: "endpointslices", singular: "endpointslice", kind: "EndpointSlice",
              namespaced: true),
        // Usage of pods and nodes as metrics-server serves it (`kubectl top`), measured on read.
        .init(group: "metrics.k8s.io", version: "v1beta1", resource: "pods", singular: "", kind: "PodMetrics", namespaced: true,
              verbs: ["get", "list"], computed: true),
        .init(group: "metrics.k8s.io", version: "v1beta1", resource: "nodes", singular: "", kind: "NodeMetrics", namespaced: false,
              verbs: ["get", "list"], computed: true),
        // Certificates for the mesh's identities (signerName kemu.dev/mesh), and others' signers.
        .init(group: "certificates.k8s.io", version: "v1", resource: "certificatesigningrequests", singular: "certificatesigningrequest",
              kind: "CertificateSigningRequest", namespaced: false, shortNames: ["csr"], subresources: ["status", "approval"]),
        // Istio's security policies at layer 4 (MeshPolicy.swift), so users' manifests apply.
        .init(group: "security.istio.io", version: "v1", resource: "authorizationpolicies", singular: "authorizationpolicy",
              kind: "AuthorizationPolicy", namespaced: true, shortNames: ["ap"], categories: ["istio-io", "security-istio-io"]),
        .init(group: "security.istio.io", version: "v1", resource: "peerauthentications", singular: "peerauthentication",
              kind: "PeerAuthentication", namespaced: true, shortNames: ["pa"], categories: ["istio-io", "security-istio-io"]),
        // Gateway API's routes in their mesh shape (GAMMA): a Service's connections split by
        // weight among other Services (TrafficRoute.swift). HTTPRoute first: v1 is the group's
        // preferred version.
        .init(group: "gateway.networking.k8s.io", version: "v1", resource: "httproutes", singular: "httproute", kind: "HTTPRoute",
              namespaced: true, categories: ["gateway-api"], subresources: ["status"]),
        .init(group: "gateway.networking.k8s.io", version: "v1alpha2", resource: "tcproutes", singular: "tcproute", kind: "TCPRoute",
              namespaced: true, categories: ["gateway-api"], subresources: ["status"]),
        // HTTPRoute's previous version, the same schema (older manifests, Linkerd's docs): stored as v1.
        .init(group: "gateway.networking.k8s.io", version: "v1beta1", resource: "httproutes", singular: "httproute", kind: "HTTPRoute",
              namespaced: true, categories: ["gateway-api"], subresources: ["status"]),
        // kemu's own: what the node proxies do to a Service's connections (Fault.swift).
        .init(group: "kemu.dev", version: "v1", resource: "faults", singular: "fault", kind: "Fault", namespaced: true),
    ]

    /// Every group and version served, in discovery order.
    public static var groups: [(group: String, version: String)] {
        var seen: [String] = []
        var result: [(String, String)] = []
        for r in all where !seen.contains(r.groupVersion) {
            seen.append(r.groupVersion)
            result.append((r.group, r.version))
        }
        return result
    }

    /// Each group once, in discovery order, with its versions (the preferred, first-listed, first).
    public static var groupVersions: [(group: String, versions: [String])] {
        var result: [(group: String, versions: [String])] = []
        for g in groups {
            if let i = result.firstIndex(where: { $0.group == g.group }) { result[i].versions.append(g.version) } else {
                result.append((g.group, [g.version]))
            }
        }
        return result
    }

    /// The version a resource's objects are stored in: its group's first-listed (preferred) one.
    public static func storage(of r: APIResource) -> APIResource { storageVersions[r.qualifiedName] ?? r }

    /// Looked up on every request: made once.
    private static let storageVersions: [String: APIResource] = Dictionary(all.map { ($0.qualifiedName, $0) }, uniquingKeysWith: { first, _ in first })

    public static func find(group: String, version: String, resource: String) -> APIResource? {
        all.first { $0.group == group && $0.version == version && $0.resource == resource }
    }

    public static let namespaces = builtIn("namespaces")
    public static let pods = builtIn("pods")
    public static let services = builtIn("services")
    public static let nodes = builtIn("nodes")
    public static let events = builtIn("events")
    public static let configMaps = builtIn("configmaps")
    public static let serviceAccounts = builtIn("serviceaccounts")
    public static let secrets = builtIn("secrets")
    public static let leases = builtIn("leases")
    public static let deployments = builtIn("deployments")
    public static let endpointSlices = builtIn("endpointslices")
    public static let faults = builtIn("faults")
    public static let roles = builtIn("roles")
    public static let clusterRoles = builtIn("clusterroles")
    public static let roleBindings = builtIn("rolebindings")
    public static let clusterRoleBindings = builtIn("clusterrolebindings")

    /// One of `all` by its plural; only for the names above, which are kemu's own constants.
    private static func builtIn(_ plural: String) -> APIResource {
        guard let resource = all.first(where: { $0.resource == plural }) else { preconditionFailure("no built-in resource \(plural)") }
        return resource
    }
}

/// Names kemu derives from a pod, shared by the node agent (which makes the sandbox) and the API
/// server (which runs `exec` in it).
public enum PodNames {
    /// The pod's sandbox: a DNS label unique per pod object, its name and the start of its uid.
    public static func sandbox(_ pod: JSON) -> String {
        let base = String(pod.name.map { $0 == "." ? "-" : $0 }.prefix(50))
        return "\(base)-\(pod.uid.prefix(8))".lowercased()
    }

    /// The process of a running container, from its status (`containerID: kemu://PID`, which
    /// the node agent writes): the named container's, or else the first container's.
    public static func containerProcess(_ pod: JSON, container: String?) -> Int32? {
        let name = container ?? pod[path: "spec.containers"]?.array?.first?["name"]?.string
        let status = (pod[path: "status.containerStatuses"]?.array ?? []).first { $0["name"]?.string == name }
        guard let id = status?["containerID"]?.string, id.hasPrefix("kemu://"), status?["state"]?["running"] != nil else { return nil }
        return Int32(id.dropFirst("kemu://".count))
    }
}

/// The defaults upstream's API server gives a pod spec, shared by admission (pods and pod
/// templates) and the controllers that make pods, so both kinds of pod look the same.
public enum PodDefaults {
    /// The ServiceAccount every namespace has, which pods run as unless they name another.
    public static func defaultServiceAccount(namespace: String) -> JSON {
        var account: JSON = ["apiVersion": "v1", "kind": "ServiceAccount"]
        account.name = "default"
        account.namespace = namespace
        return account
    }

    public static func apply(to spec: inout JSON) {
        for (key, value) in [("restartPolicy", "Always"), ("dnsPolicy", "ClusterFirst"), ("schedulerName", "default-scheduler")] as [(String, JSON)]
        where spec[key] == nil { spec[key] = value }
        if spec["terminationGracePeriodSeconds"] == nil { spec["terminationGracePeriodSeconds"] = 30 }
        if var containers = spec["containers"]?.array {
            for i in containers.indices {
                if containers[i]["imagePullPolicy"] == nil { containers[i]["imagePullPolicy"] = "IfNotPresent" }
                if var ports = containers[i]["ports"]?.array {
                    for j in ports.indices where ports[j]["protocol"] == nil { ports[j]["protocol"] = "TCP" }
                    containers[i]["ports"] = .array(ports)
                }
            }
            spec["containers"] = .array(containers)
        }
    }
}
