import KemuAPI

/// Whether a pod may go on a node, by what its spec says about nodes: `nodeSelector`, the
/// required node affinity (terms ORed, each term's expressions on labels and fields ANDed; In,
/// NotIn, Exists, DoesNotExist, Gt, Lt), and tolerations against taints.
enum NodePlacement {
    static func matches(_ spec: JSON, node: JSON) -> Bool {
        matches(spec, name: node.name, labels: node.labels)
    }

    static func matches(_ spec: JSON, name: String, labels: [String: String]) -> Bool {
        let selector = JSON.stringMap(spec["nodeSelector"])
        guard selector.allSatisfy({ labels[$0.key] == $0.value }) else { return false }
        guard let terms = spec[path: "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms"]?.array else {
            return true
        }
        // An empty term matches nothing, as upstream; a list of terms needs one to match.
        return terms.contains { term in
            let expressions = term["matchExpressions"]?.array ?? [], fields = term["matchFields"]?.array ?? []
            guard !expressions.isEmpty || !fields.isEmpty else { return false }
            return expressions.allSatisfy { requirement($0, labels) }
                && fields.allSatisfy { $0["key"]?.string == "metadata.name" && requirement($0, ["metadata.name": name]) }
        }
    }

    static func requirement(_ r: JSON, _ labels: [String: String]) -> Bool {
        let key = r["key"]?.string ?? ""
        let values = (r["values"]?.array ?? []).compactMap(\.string)
        let value = labels[key]
        switch r["operator"]?.string {
        case "In": return value.map(values.contains) ?? false
        case "NotIn": return value.map { !values.contains($0) } ?? true
        case "Exists": return value != nil
        case "DoesNotExist": return value == nil
        case "Gt", "Lt":
            guard let v = value.flatMap({ Int64($0) }), let bound = values.first.flatMap({ Int64($0) }) else { return false }
            return r["operator"]?.string == "Gt" ? v > bound : v < bound
        default: return false
        }
    }

    /// Upstream's ToleratesTaint: same effect (or none given), and the key with operator Exists
    /// (no key: every taint) or the key and value with Equal.
    static func tolerates(_ toleration: JSON, _ taint: JSON) -> Bool {
        let effect = toleration["effect"]?.string ?? ""
        guard effect.isEmpty || effect == taint["effect"]?.string else { return false }
        let key = toleration["key"]?.string ?? ""
        if toleration["operator"]?.string == "Exists" { return key.isEmpty || key == taint["key"]?.string }
        return key == taint["key"]?.string && (toleration["value"]?.string ?? "") == (taint["value"]?.string ?? "")
    }
}
