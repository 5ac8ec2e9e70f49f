/// A Gateway API route in its mesh (GAMMA) shape, as far as a layer-4 proxy can follow it: a
/// `TCPRoute` (gateway.networking.k8s.io/v1alpha2) or `HTTPRoute` (v1) whose parentRef is a
/// Service sends that Service's new connections to its backendRefs' Services by weight (canary:
/// v1 90, v2 10). What needs layer 7 (HTTP matches and filters) is noted, not followed; parents
/// that are Gateways, or Services in another namespace (consumer routes), are left alone.
public struct TrafficRoute: Sendable, Equatable {
    /// A Service this route attaches to, on one of its ports or (nil) all.
    public struct Parent: Sendable, Equatable {
        public var service: String
        public var port: UInt16?

        public init(service: String, port: UInt16?) {
            self.service = service
            self.port = port
        }
    }

    /// Where a share of the connections goes: a Service's port, by weight. `resolvable` is false
    /// for a reference kemu cannot follow (another namespace without a grant, not a Service):
    /// its share is refused, as the Gateway API asks.
    public struct Backend: Sendable, Equatable {
        public var service: String
        public var port: UInt16
        public var weight: Int
        public var resolvable: Bool
        /// Why not, in the Gateway API's words: RefNotPermitted (another namespace), InvalidKind.
        public var unresolvedReason: String?

        public init(service: String, port: UInt16, weight: Int, resolvable: Bool, unresolvedReason: String? = nil) {
            self.service = service
            self.port = port
            self.weight = weight
            self.resolvable = resolvable
            self.unresolvedReason = resolvable ? nil : unresolvedReason
        }
    }

    public var kind: String
    public var namespace: String
    public var name: String
    /// When it was made (RFC 3339): of two routes on one Service port the older wins, as the
    /// Gateway API resolves conflicts.
    public var created: String
    public var parents: [Parent]
    public var backends: [Backend]
    /// What kemu does not follow (layer-7 matches, filters, extra rules), for the route's status.
    public var notes: [String]

    public static let group = "gateway.networking.k8s.io"
    public static let kinds: Set<String> = ["TCPRoute", "HTTPRoute"]
    public static let maxWeight = 1_000_000

    /// `HTTPRoute default/canary`
    public var description: String { "\(kind) \(namespace)/\(name)" }

    /// The order in which routes claim a Service port: oldest first, then by kind and name.
    public static func precedes(_ a: TrafficRoute, _ b: TrafficRoute) -> Bool {
        (a.created, a.kind, a.namespace, a.name) < (b.created, b.kind, b.namespace, b.name)
    }

    /// The route an object describes, or the problems with it, each naming its field (what the
    /// upstream CRDs' schemas refuse).
    public static func parse(_ o: JSON) -> Result<TrafficRoute, FieldProblems> {
        var problems: [(String, String)] = []
        let kind = o["kind"]?.string ?? "TCPRoute"
        let spec = o["spec"] ?? [:]
        var route = TrafficRoute(kind: kind, namespace: o.namespace, name: o.name,
                                 created: o[path: "metadata.creationTimestamp"]?.string ?? "", parents: [], backends: [], notes: [])
        let parentRefs = list(spec["parentRefs"], at: "spec.parentRefs", max: 32, &problems)
        for (i, ref) in parentRefs.enumerated() {
            if let parent = parent(ref, at: "spec.parentRefs[\(i)]", namespace: o.namespace, &problems, &route.notes) {
                route.parents.append(parent)
            }
        }
        let rules = list(spec["rules"], at: "spec.rules", max: 16, &problems)
        var chosen: Int?
        for (i, rule) in rules.enumerated() {
            guard rule.object != nil else { problems.append(("spec.rules[\(i)]", "must be an object")); continue }
            let refs = list(rule["backendRefs"], at: "spec.rules[\(i)].backendRefs", max: 16, &problems)
            let backends = refs.enumerated().compactMap { j, ref in
                backend(ref, at: "spec.rules[\(i)].backendRefs[\(j)]", namespace: o.namespace, &problems)
            }
            if rule["filters"] != nil, !(rule["filters"]?.array?.isEmpty ?? true) { route.notes.append("spec.rules[\(i)].filters: not applied at layer 4") }
            if chosen == nil && (kind != "HTTPRoute" || catchAll(rule["matches"])) {
                chosen = i
                route.backends = backends
            } else {
                route.notes.append("spec.rules[\(i)]: not followed (kemu routes connections, not requests: the first rule that matches every request is used)")
            }
        }
        if kind == "HTTPRoute", chosen == nil, !rules.isEmpty {
            route.notes.append("no rule matches every request: the Service's own endpoints serve it")
        }
        guard problems.isEmpty else { return .failure(FieldProblems(problems)) }
        return .success(route)
    }

    /// An HTTPRoute rule with no matches, or only a `/` path prefix, matches every request.
    static func catchAll(_ matches: JSON?) -> Bool {
        guard let matches = matches?.array, !matches.isEmpty else { return true }
        return matches.contains { m in
            let keys = Set(m.object?.keys ?? [])
            guard keys.isSubset(of: ["path"]) else { return false }
            let type = m[path: "path.type"]?.string ?? "PathPrefix"
            let value = m[path: "path.value"]?.string ?? "/"
            return type == "PathPrefix" && value == "/"
        }
    }

    static func list(_ v: JSON?, at field: String, max: Int, _ problems: inout [(String, String)]) -> [JSON] {
        guard let v else { return [] }
        guard let items = v.array else { problems.append((field, "must be a list")); return [] }
        if items.count > max { problems.append((field, "must have at most \(max) items")) }
        return items
    }

    static func port(_ v: JSON?, at field: String, _ problems: inout [(String, String)]) -> UInt16? {
        guard let v else { return nil }
        guard let n = v.int, (1...65535).contains(n) else {
            problems.append((field, "\(v.text()): must be a port number from 1 to 65535"))
            return nil
        }
        return UInt16(n)
    }

    /// A reference's target: (group, kind, name, namespace), checked as the CRDs do.
    static func reference(_ ref: JSON, at field: String, defaultKind: String, _ problems: inout [(String, String)]) -> (String, String, String, String?)? {
        guard ref.object != nil else { problems.append((field, "must be an object")); return nil }
        for key in ["group", "kind", "name", "namespace"] where ref[key] != nil && ref[key]?.string == nil {
            problems.append(("\(field).\(key)", "must be a string"))
        }
        guard let name = ref["name"]?.string, !name.isEmpty else { problems.append(("\(field).name", "Required value")); return nil }
        return (ref["group"]?.string ?? "", ref["kind"]?.string ?? defaultKind, name, ref["namespace"]?.string)
    }

    static func isService(_ group: String, _ kind: String) -> Bool { (group.isEmpty || group == "core") && kind == "Service" }

    /// The Service a parentRef of a route in `namespace` attaches to, read as the proxies read it;
    /// nil for anything else (a Gateway, another namespace's Service, a malformed reference).
    public static func serviceParent(_ ref: JSON, namespace: String) -> Parent? {
        var problems: [(String, String)] = [], notes: [String] = []
        let parent = parent(ref, at: "", namespace: namespace, &problems, &notes)
        return problems.isEmpty ? parent : nil
    }

    static func parent(_ ref: JSON, at field: String, namespace: String, _ problems: inout [(String, String)], _ notes: inout [String]) -> Parent? {
        let port = port(ref["port"], at: "\(field).port", &problems)
        guard let (group, kind, name, refNamespace) = reference(ref, at: field, defaultKind: "Gateway", &problems) else { return nil }
        guard isService(group, kind) else {
            notes.append("\(field): \(kind) \(name) is not a Service (kemu has no gateways)")
            return nil
        }
        if let refNamespace, refNamespace != namespace {
            notes.append("\(field): Service \(refNamespace)/\(name) is in another namespace (consumer routes are not followed)")
            return nil
        }
        return Parent(service: name, port: port)
    }

    static func backend(_ ref: JSON, at field: String, namespace: String, _ problems: inout [(String, String)]) -> Backend? {
        var weight = 1
        if let w = ref["weight"] {
            if let n = w.int, (0...Int64(maxWeight)).contains(n) { weight = Int(n) } else {
                problems.append(("\(field).weight", "\(w.text()): must be a whole number from 0 to \(maxWeight)"))
            }
        }
        let port = port(ref["port"], at: "\(field).port", &problems)
        guard let (group, kind, name, refNamespace) = reference(ref, at: field, defaultKind: "Service", &problems) else { return nil }
        let service = isService(group, kind)
        guard let port else {
            if service { problems.append(("\(field).port", "Required value: a Service reference must name its port")) }
            return service ? nil : Backend(service: name, port: 0, weight: weight, resolvable: false, unresolvedReason: "InvalidKind")
        }
        let sameNamespace = refNamespace == nil || refNamespace == namespace
        return Backend(service: name, port: port, weight: weight, resolvable: service && sameNamespace,
                       unresolvedReason: service ? "RefNotPermitted" : "InvalidKind")
    }
}

extension TrafficRoute {
    /// `web-v1:80=90,web-v2:80=10` for `kubectl get` (of the rule kemu follows).
    public static func summary(_ o: JSON) -> String {
        guard case let .success(route) = parse(o) else { return "<invalid>" }
        if route.backends.isEmpty { return "<none>" }
        return route.backends.map { "\($0.service):\($0.port)=\($0.weight)" }.joined(separator: ",")
    }
}
