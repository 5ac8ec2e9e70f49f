import KemuAPI

/// What a request asks to do, in RBAC's terms (upstream's authorizer.Attributes): a verb on a
/// resource (group, resource, subresource, namespace, name) or on a non-resource path.
public struct RequestAttributes: Sendable, Equatable, CustomStringConvertible {
    public var verb: String
    public var group = ""
    public var resource = ""
    public var subresource = ""
    public var namespace = ""
    public var name = ""
    /// Set for non-resource requests (`/version`, `/api`, …), nil for resource requests.
    public var path: String?

    public init(verb: String, group: String = "", resource: String = "", subresource: String = "",
                namespace: String = "", name: String = "") {
        self.verb = verb
        self.group = group
        self.resource = resource
        self.subresource = subresource
        self.namespace = namespace
        self.name = name
    }

    public init(verb: String, path: String) {
        self.verb = verb
        self.path = path
    }

    /// `pods/exec`: how rules name a subresource.
    public var combinedResource: String { subresource.isEmpty ? resource : "\(resource)/\(subresource)" }

    /// Upstream's wording: `User "u" cannot delete resource "pods" in API group "" in the namespace "default"`.
    public var description: String {
        if let path { return "\(verb) path \"\(path)\"" }
        let scope = namespace.isEmpty ? "at the cluster scope" : "in the namespace \"\(namespace)\""
        return "\(verb) resource \"\(combinedResource)\" in API group \"\(group)\" \(scope)"
    }
}

/// One rbac.authorization.k8s.io/v1 PolicyRule, matched as upstream's `RuleAllows`: `*` matches
/// every verb, group or resource, `*/status` every resource's status, an empty resourceNames every
/// name, and a non-resource URL ending in `*` every path under it.
public struct PolicyRule: Sendable, Equatable {
    public var verbs: [String]
    public var apiGroups: [String] = []
    public var resources: [String] = []
    public var resourceNames: [String] = []
    public var nonResourceURLs: [String] = []

    public init(verbs: [String], apiGroups: [String] = [], resources: [String] = [], resourceNames: [String] = [],
                nonResourceURLs: [String] = []) {
        self.verbs = verbs
        self.apiGroups = apiGroups
        self.resources = resources
        self.resourceNames = resourceNames
        self.nonResourceURLs = nonResourceURLs
    }

    /// From a stored rule (already validated by admission: missing lists are empty).
    public init(json: JSON) {
        let strings = { (key: String) in (json[key]?.array ?? []).compactMap(\.string) }
        self.init(verbs: strings("verbs"), apiGroups: strings("apiGroups"), resources: strings("resources"),
                  resourceNames: strings("resourceNames"), nonResourceURLs: strings("nonResourceURLs"))
    }

    public var json: JSON {
        var o = JSONObject()
        let lists: [(String, [String])] = [("verbs", verbs), ("apiGroups", apiGroups), ("resources", resources),
                                           ("resourceNames", resourceNames), ("nonResourceURLs", nonResourceURLs)]
        for (key, list) in lists where !list.isEmpty || key == "verbs" { o[key] = .array(list.map { .string($0) }) }
        return .object(o)
    }

    public func allows(_ a: RequestAttributes) -> Bool {
        guard verbs.contains("*") || verbs.contains(a.verb) else { return false }
        if let path = a.path {
            return nonResourceURLs.contains { url in
                url == "*" || url == path || (url.hasSuffix("*") && path.hasPrefix(url.dropLast()))
            }
        }
        guard apiGroups.contains("*") || apiGroups.contains(a.group) else { return false }
        let combined = a.combinedResource
        let resourceMatches = resources.contains { r in
            r == "*" || r == combined || (!a.subresource.isEmpty && r == "*/\(a.subresource)")
        }
        guard resourceMatches else { return false }
        return resourceNames.isEmpty || resourceNames.contains(a.name)
    }

    /// Every request this rule allows, one per verb × group × resource × name (a wildcard stays a
    /// literal `*`, which only a wildcard covers): the questions to ask of a user who writes this
    /// rule into a role, so that nobody grants more than they hold (upstream's escalation check).
    var expanded: [RequestAttributes] {
        var all: [RequestAttributes] = []
        for verb in verbs {
            for url in nonResourceURLs { all.append(RequestAttributes(verb: verb, path: url)) }
            for group in apiGroups {
                for resource in resources {
                    let parts = resource.split(separator: "/", maxSplits: 1).map(String.init)
                    for name in resourceNames.isEmpty ? [""] : resourceNames {
                        all.append(RequestAttributes(verb: verb, group: group, resource: parts[0],
                                                     subresource: parts.count > 1 ? parts[1] : "", name: name))
                    }
                }
            }
        }
        return all
    }

    /// Whether this rule covers `a`, a request one of `expanded` stands for: as `allows`, but an
    /// empty name (all names) needs a rule without resourceNames, and a `*` needs a `*`.
    func covers(_ a: RequestAttributes) -> Bool {
        if a.path == nil, a.name.isEmpty, !resourceNames.isEmpty { return false }
        if let path = a.path, path.hasSuffix("*") {
            guard verbs.contains("*") || verbs.contains(a.verb) else { return false }
            return nonResourceURLs.contains { $0 == "*" || $0 == path || ($0.hasSuffix("*") && path.hasPrefix($0.dropLast())) }
        }
        return allows(a)
    }
}
