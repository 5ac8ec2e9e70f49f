/// Istio's security.istio.io/v1 AuthorizationPolicy at layer 4, as ztunnel enforces it: who may
/// open a connection to a workload, judged by the destination with the peer's verified identity.
///
/// ```yaml
/// apiVersion: security.istio.io/v1
/// kind: AuthorizationPolicy
/// metadata: {name: web-from-frontend, namespace: shop}
/// spec:
///   selector: {matchLabels: {app: web}}     # absent: every workload in the namespace
///   action: ALLOW                           # or DENY
///   rules:
///   - from: [{source: {principals: ["cluster.local/ns/shop/sa/frontend"]}}]
///     to: [{operation: {ports: ["8080"]}}]
/// ```
/// A policy in the root namespace (`istio-system`) applies to every namespace. DENY policies
/// are checked first, then a workload with any ALLOW policy needs one to match; with none,
/// everything is allowed. Layer-7 fields (methods, paths, hosts, request principals, `when`)
/// cannot be judged here: a rule with them never matches in an ALLOW policy and matches
/// regardless of them in a DENY policy (ztunnel's rule: never looser than asked).
public struct AuthorizationPolicy: Sendable, Equatable {
    public enum Action: String, Sendable { case allow = "ALLOW", deny = "DENY" }

    public struct Source: Sendable, Equatable {
        public var principals: [String]?
        public var notPrincipals: [String]?
        public var namespaces: [String]?
        public var notNamespaces: [String]?
        public var ipBlocks: [String]?
        public var notIpBlocks: [String]?
        /// Fields only layer 7 can judge.
        public var layer7 = false
    }

    public struct Operation: Sendable, Equatable {
        public var ports: [String]?
        public var notPorts: [String]?
        public var layer7 = false
    }

    public struct Rule: Sendable, Equatable {
        public var from: [Source]?
        public var to: [Operation]?
        public var layer7 = false
    }

    public var namespace: String
    public var name: String
    public var selector: [String: String]?
    public var action: Action
    public var rules: [Rule]

    public static let rootNamespace = "istio-system"
    public static let group = "security.istio.io"

    /// What a connection looks like to the policy.
    public struct Request: Sendable {
        /// The peer's principal (`cluster.local/ns/NS/sa/SA`), nil for plaintext.
        public var principal: String?
        public var sourceNamespace: String?
        public var sourceIP: UInt32?
        public var port: UInt16

        public init(principal: String?, sourceNamespace: String?, sourceIP: UInt32?, port: UInt16) {
            self.principal = principal
            self.sourceNamespace = sourceNamespace
            self.sourceIP = sourceIP
            self.port = port
        }
    }

    /// Whether the policy applies to a workload in `namespace` with `labels`.
    public func applies(namespace workloadNamespace: String, labels: [String: String]) -> Bool {
        guard namespace == workloadNamespace || namespace == Self.rootNamespace else { return false }
        return (selector ?? [:]).allSatisfy { labels[$0.key] == $0.value }
    }

    /// The first rule (index) that matches the request, if any.
    public func matchingRule(_ r: Request) -> Int? {
        rules.indices.first { rules[$0].matches(r, action: action) }
    }

    /// The decision for a workload: `allowed`, and the policy that decided (nil: no policy).
    public static func evaluate(_ policies: [AuthorizationPolicy], namespace: String, labels: [String: String],
                                _ r: Request) -> (allowed: Bool, policy: AuthorizationPolicy?) {
        let applying = policies.filter { $0.applies(namespace: namespace, labels: labels) }
        if let deny = applying.first(where: { $0.action == .deny && $0.matchingRule(r) != nil }) { return (false, deny) }
        let allows = applying.filter { $0.action == .allow }
        if allows.isEmpty { return (true, nil) }
        if let allow = allows.first(where: { $0.matchingRule(r) != nil }) { return (true, allow) }
        return (false, allows.first)
    }
}

extension AuthorizationPolicy.Rule {
    func matches(_ r: AuthorizationPolicy.Request, action: AuthorizationPolicy.Action) -> Bool {
        let anyLayer7 = layer7 || (from ?? []).contains { $0.layer7 } || (to ?? []).contains { $0.layer7 }
        if anyLayer7 && action == .allow { return false }
        if let from, !from.contains(where: { $0.matches(r) }) { return false }
        if let to, !to.contains(where: { $0.matches(r) }) { return false }
        return true
    }
}

extension AuthorizationPolicy.Source {
    func matches(_ r: AuthorizationPolicy.Request) -> Bool {
        let principal = r.principal ?? ""
        if let principals, !principals.contains(where: { Self.glob($0, principal, authenticated: r.principal != nil) }) { return false }
        if let notPrincipals, notPrincipals.contains(where: { Self.glob($0, principal, authenticated: r.principal != nil) }) { return false }
        let namespace = r.sourceNamespace ?? ""
        if let namespaces, !namespaces.contains(where: { Self.glob($0, namespace, authenticated: r.sourceNamespace != nil) }) { return false }
        if let notNamespaces, notNamespaces.contains(where: { Self.glob($0, namespace, authenticated: r.sourceNamespace != nil) }) { return false }
        if let ipBlocks, !ipBlocks.contains(where: { Self.inBlock($0, r.sourceIP) }) { return false }
        if let notIpBlocks, notIpBlocks.contains(where: { Self.inBlock($0, r.sourceIP) }) { return false }
        return true
    }

    /// Istio's string match: exact, `prefix*`, `*suffix`, or `*` (any value, present).
    static func glob(_ pattern: String, _ value: String, authenticated: Bool) -> Bool {
        if pattern == "*" { return authenticated && !value.isEmpty }
        if pattern.hasSuffix("*") { return value.hasPrefix(pattern.dropLast()) }
        if pattern.hasPrefix("*") { return value.hasSuffix(pattern.dropFirst()) }
        return pattern == value
    }

    static func inBlock(_ block: String, _ ip: UInt32?) -> Bool {
        guard let ip, let (network, length) = AuthorizationPolicy.parseBlock(block) else { return false }
        let mask: UInt32 = length == 0 ? 0 : ~UInt32(0) << (32 - UInt32(length))
        return ip & mask == network & mask
    }
}

extension AuthorizationPolicy.Operation {
    func matches(_ r: AuthorizationPolicy.Request) -> Bool {
        if let ports, !ports.contains(String(r.port)) { return false }
        if let notPorts, notPorts.contains(String(r.port)) { return false }
        return true
    }
}

extension AuthorizationPolicy {
    /// `a.b.c.d` or `a.b.c.d/n` → address and prefix length.
    static func parseBlock(_ text: String) -> (UInt32, Int)? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2 else { return nil }
        let octets = parts[0].split(separator: ".", omittingEmptySubsequences: false).map { UInt8($0) }
        guard octets.count == 4, octets.allSatisfy({ $0 != nil }) else { return nil }
        let address = octets.reduce(UInt32(0)) { $0 << 8 | UInt32($1 ?? 0) }
        guard parts.count == 2 else { return (address, 32) }
        guard let length = Int(parts[1]), (0...32).contains(length) else { return nil }
        return (address, length)
    }

    /// The policy an object describes, or the problems with it, each naming its field.
    public static func parse(_ o: JSON) -> Result<AuthorizationPolicy, FieldProblems> {
        var problems: [(String, String)] = []
        let spec = o["spec"] ?? [:]
        let actionText = spec["action"]?.string ?? "ALLOW"
        let action = Action(rawValue: actionText)
        if action == nil {
            problems.append(("spec.action", "\"\(actionText)\": kemu enforces ALLOW and DENY (AUDIT and CUSTOM need an extension server)"))
        }
        if spec["targetRef"] != nil || spec["targetRefs"] != nil {
            problems.append(("spec.targetRefs", "kemu selects workloads by spec.selector only"))
        }
        var selector: [String: String]?
        if let s = spec["selector"] {
            if let labels = s["matchLabels"]?.object {
                selector = labels.reduce(into: [:]) { $0[$1.key] = $1.value.string ?? "" }
            } else if s.object?.isEmpty == false {
                problems.append(("spec.selector", "must be {matchLabels: {...}}"))
            }
        }
        var rules: [Rule] = []
        for (i, r) in (spec["rules"]?.array ?? []).enumerated() {
            var rule = Rule()
            if let from = r["from"]?.array {
                rule.from = from.enumerated().map { j, f in source(f["source"] ?? [:], at: "spec.rules[\(i)].from[\(j)].source", &problems) }
            }
            if let to = r["to"]?.array {
                rule.to = to.enumerated().map { j, t in operation(t["operation"] ?? [:], at: "spec.rules[\(i)].to[\(j)].operation", &problems) }
            }
            rule.layer7 = r["when"] != nil
            rules.append(rule)
        }
        if spec["rules"] != nil && spec["rules"]?.array == nil { problems.append(("spec.rules", "must be a list")) }
        guard problems.isEmpty, let action else { return .failure(FieldProblems(problems)) }
        return .success(AuthorizationPolicy(namespace: o.namespace, name: o.name, selector: selector, action: action, rules: rules))
    }

    static func strings(_ v: JSON?, at field: String, _ problems: inout [(String, String)]) -> [String]? {
        guard let v else { return nil }
        guard let items = v.array, items.allSatisfy({ $0.string != nil }) else {
            problems.append((field, "must be a list of strings"))
            return nil
        }
        return items.compactMap(\.string)
    }

    static func source(_ s: JSON, at path: String, _ problems: inout [(String, String)]) -> Source {
        var source = Source()
        source.principals = strings(s["principals"], at: "\(path).principals", &problems)
        source.notPrincipals = strings(s["notPrincipals"], at: "\(path).notPrincipals", &problems)
        source.namespaces = strings(s["namespaces"], at: "\(path).namespaces", &problems)
        source.notNamespaces = strings(s["notNamespaces"], at: "\(path).notNamespaces", &problems)
        source.ipBlocks = strings(s["ipBlocks"] ?? s["remoteIpBlocks"], at: "\(path).ipBlocks", &problems)
        source.notIpBlocks = strings(s["notIpBlocks"] ?? s["notRemoteIpBlocks"], at: "\(path).notIpBlocks", &problems)
        for (name, blocks) in [("ipBlocks", source.ipBlocks), ("notIpBlocks", source.notIpBlocks)] {
            for block in blocks ?? [] where parseBlock(block) == nil {
                problems.append(("\(path).\(name)", "\"\(block)\" is not an IPv4 address or CIDR"))
            }
        }
        source.layer7 = s["requestPrincipals"] != nil || s["notRequestPrincipals"] != nil
        return source
    }

    static func operation(_ o: JSON, at path: String, _ problems: inout [(String, String)]) -> Operation {
        var operation = Operation()
        operation.ports = strings(o["ports"], at: "\(path).ports", &problems)
        operation.notPorts = strings(o["notPorts"], at: "\(path).notPorts", &problems)
        for (name, ports) in [("ports", operation.ports), ("notPorts", operation.notPorts)] {
            for port in ports ?? [] where UInt16(port).map({ $0 == 0 }) ?? true {
                problems.append(("\(path).\(name)", "\"\(port)\" is not a port number (1-65535)"))
            }
        }
        operation.layer7 = ["hosts", "notHosts", "methods", "notMethods", "paths", "notPaths"].contains { o[$0] != nil }
        return operation
    }
}

/// Istio's security.istio.io/v1 PeerAuthentication: whether a workload accepts plaintext.
/// STRICT: only connections through the mesh (mutual TLS); PERMISSIVE (the default) both.
/// The narrowest policy wins: a workload's (selector) over its namespace's over the root
/// namespace's.
public struct PeerAuthentication: Sendable, Equatable {
    public enum Mode: String, Sendable { case strict = "STRICT", permissive = "PERMISSIVE", disable = "DISABLE", unset = "UNSET" }
    public var namespace: String
    public var name: String
    public var selector: [String: String]?
    public var mode: Mode

    public static func parse(_ o: JSON) -> Result<PeerAuthentication, FieldProblems> {
        let spec = o["spec"] ?? [:]
        let text = spec[path: "mtls.mode"]?.string ?? "UNSET"
        guard let mode = Mode(rawValue: text) else {
            return .failure(FieldProblems([("spec.mtls.mode", "\"\(text)\": one of STRICT, PERMISSIVE, DISABLE, UNSET")]))
        }
        if spec["portLevelMtls"] != nil {
            return .failure(FieldProblems([("spec.portLevelMtls", "kemu applies one mode per workload; put ports that differ in a workload of their own")]))
        }
        let selector = spec[path: "selector.matchLabels"]?.object?.reduce(into: [String: String]()) { $0[$1.key] = $1.value.string ?? "" }
        return .success(PeerAuthentication(namespace: o.namespace, name: o.name, selector: selector, mode: mode))
    }

    /// Whether a workload must be reached through the mesh.
    public static func strict(_ policies: [PeerAuthentication], namespace: String, labels: [String: String]) -> Bool {
        deciding(policies, namespace: namespace, labels: labels)?.mode == .strict
    }

    /// The PeerAuthentication that sets a workload's mode (workload > namespace > mesh-wide);
    /// nil: none does (PERMISSIVE).
    public static func deciding(_ policies: [PeerAuthentication], namespace: String, labels: [String: String]) -> PeerAuthentication? {
        func matches(_ p: PeerAuthentication) -> Bool { (p.selector ?? [:]).allSatisfy { labels[$0.key] == $0.value } }
        let candidates: [PeerAuthentication?] = [
            policies.first { $0.namespace == namespace && $0.selector != nil && matches($0) && $0.mode != .unset },
            policies.first { $0.namespace == namespace && $0.selector == nil && $0.mode != .unset },
            policies.first { $0.namespace == AuthorizationPolicy.rootNamespace && $0.selector == nil && $0.mode != .unset },
        ]
        return candidates.compactMap { $0 }.first
    }
}

/// What is wrong with an object, field by field.
public struct FieldProblems: Error, Sendable {
    public var items: [(field: String, message: String)]
    public init(_ items: [(String, String)]) { self.items = items.map { (field: $0.0, message: $0.1) } }
}
