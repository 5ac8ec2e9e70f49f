import KemuAPI

/// Ingress, IngressClass, NetworkPolicy, PodDisruptionBudget, PriorityClass, ResourceQuota:
/// served and validated as upstream validates them, so manifests and charts that carry them
/// apply. What acts on them (an ingress data plane, NetworkPolicy enforcement, eviction's
/// budget check, quota admission) is separate work.
extension Admission {
    /// The highest priority a user's class may have; above are the system's own.
    static let highestUserPriority: Int64 = 1_000_000_000

    static func defaultPolicyKinds(_ o: inout JSON, _ r: APIResource) {
        switch r.kind {
        case "NetworkPolicy":
            var spec = o["spec"] ?? [:]
            if spec["podSelector"] == nil { spec["podSelector"] = [:] }
            // Upstream's default: Ingress always, Egress when there are egress rules.
            if spec["policyTypes"] == nil {
                spec["policyTypes"] = spec["egress"] != nil ? ["Ingress", "Egress"] : ["Ingress"]
            }
            for direction in ["ingress", "egress"] {
                guard var rules = spec[direction]?.array else { continue }
                for i in rules.indices {
                    guard var ports = rules[i]["ports"]?.array else { continue }
                    for j in ports.indices where ports[j]["protocol"] == nil { ports[j]["protocol"] = "TCP" }
                    rules[i]["ports"] = .array(ports)
                }
                spec[direction] = .array(rules)
            }
            o["spec"] = spec
        case "PriorityClass":
            if o["preemptionPolicy"] == nil { o["preemptionPolicy"] = "PreemptLowerPriority" }
        default: break
        }
    }

    static func validatePolicyKinds(_ o: JSON, _ r: APIResource) -> [FieldError] {
        var errors: [FieldError] = []
        switch r.kind {
        case "PriorityClass":
            if o.name.hasPrefix("system-") {
                errors.append(.invalid("metadata.name", "\"\(o.name)\"", "priority class names with 'system-' prefix are reserved"))
            }
            switch o["value"] {
            case .int(let value)?:
                if value > highestUserPriority {
                    errors.append(FieldError(field: "value", reason: "FieldValueForbidden",
                                             message: "Forbidden: maximum allowed value of a user defined priority is \(highestUserPriority)"))
                } else if value < Int64(Int32.min) {
                    errors.append(.invalid("value", "\(value)", "must be a 32-bit integer"))
                }
            case nil: errors.append(.required("value"))
            default: errors.append(.invalid("value", o["value"]?.text() ?? "", "must be an integer"))
            }
            if let policy = o["preemptionPolicy"]?.string, !["PreemptLowerPriority", "Never"].contains(policy) {
                errors.append(notSupported("preemptionPolicy", policy, ["Never", "PreemptLowerPriority"]))
            }
        case "PodDisruptionBudget":
            let min = o[path: "spec.minAvailable"], max = o[path: "spec.maxUnavailable"]
            if min != nil && max != nil {
                errors.append(.invalid("spec", o["spec"]?.text() ?? "", "minAvailable and maxUnavailable cannot be both set"))
            }
            for (field, value) in [("spec.minAvailable", min), ("spec.maxUnavailable", max)] {
                if let value { errors += intOrPercent(value, at: field) }
            }
            if let selector = o[path: "spec.selector"], (try? LabelSelector(json: selector)) == nil {
                errors.append(.invalid("spec.selector", selector.text(), "not a valid label selector"))
            }
        case "ResourceQuota":
            for (name, value) in o[path: "spec.hard"]?.object ?? JSONObject() where Quantity.milli(value) == nil {
                errors.append(.invalid("spec.hard[\(name)]", value.text(), "must be a quantity such as 10, 500m or 1Gi"))
            }
        case "IngressClass":
            if (o[path: "spec.controller"]?.string ?? "").isEmpty { errors.append(.required("spec.controller")) }
        case "Ingress":
            errors += validateIngress(o)
        case "NetworkPolicy":
            errors += validateNetworkPolicy(o)
        default: break
        }
        return errors
    }

    static func notSupported(_ field: String, _ value: String, _ supported: [String]) -> FieldError {
        FieldError(field: field, reason: "FieldValueNotSupported",
                   message: "Unsupported value: \"\(value)\": supported values: \(supported.map { "\"\($0)\"" }.joined(separator: ", "))")
    }

    /// A count (≥ 0) or a percentage such as "25%".
    static func intOrPercent(_ value: JSON, at field: String) -> [FieldError] {
        switch value {
        case .int(let n): return n < 0 ? [.invalid(field, "\(n)", "must be greater than or equal to 0")] : []
        case .string(let s):
            guard s.hasSuffix("%"), let n = Int(s.dropLast()), (0...100).contains(n) else {
                return [.invalid(field, "\"\(s)\"", "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%')")]
            }
            return []
        default: return [.invalid(field, value.text(), "must be an integer or a percentage")]
        }
    }

    static func validateIngress(_ o: JSON) -> [FieldError] {
        var errors: [FieldError] = []
        let rules = o[path: "spec.rules"]?.array ?? []
        if o[path: "spec.defaultBackend"] == nil && rules.isEmpty {
            errors.append(FieldError(field: "spec", reason: "FieldValueInvalid", message: "Invalid value: \"\": either `defaultBackend` or `rules` must be specified"))
        }
        if let backend = o[path: "spec.defaultBackend"] { errors += validateBackend(backend, at: "spec.defaultBackend") }
        for (i, rule) in rules.enumerated() {
            if let host = rule["host"]?.string, !host.isEmpty, !isDNSSubdomain(host.hasPrefix("*.") ? String(host.dropFirst(2)) : host) {
                errors.append(.invalid("spec.rules[\(i)].host", "\"\(host)\"", "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"))
            }
            for (j, path) in (rule[path: "http.paths"]?.array ?? []).enumerated() {
                let at = "spec.rules[\(i)].http.paths[\(j)]"
                let type = path["pathType"]?.string ?? ""
                if type.isEmpty {
                    errors.append(.required("\(at).pathType"))
                } else if !["Exact", "Prefix", "ImplementationSpecific"].contains(type) {
                    errors.append(notSupported("\(at).pathType", type, ["Exact", "ImplementationSpecific", "Prefix"]))
                } else if type != "ImplementationSpecific", !(path["path"]?.string ?? "").hasPrefix("/") {
                    errors.append(.invalid("\(at).path", "\"\(path["path"]?.string ?? "")\"", "must be an absolute path"))
                }
                if let backend = path["backend"] { errors += validateBackend(backend, at: "\(at).backend") } else { errors.append(.required("\(at).backend")) }
            }
        }
        return errors
    }

    /// A Service by name and port (a name or a number), or another resource: one of the two.
    static func validateBackend(_ backend: JSON, at field: String) -> [FieldError] {
        switch (backend["service"], backend["resource"]) {
        case (let service?, nil):
            var errors: [FieldError] = []
            if (service["name"]?.string ?? "").isEmpty { errors.append(.required("\(field).service.name")) }
            let name = service[path: "port.name"]?.string ?? "", number = service[path: "port.number"]?.int ?? 0
            if name.isEmpty == (number == 0) {
                errors.append(.invalid("\(field).service.port", service["port"]?.text() ?? "{}", "port name or number is required"))
            } else if number != 0, !(1...65535).contains(number) {
                errors.append(.invalid("\(field).service.port.number", "\(number)", "must be between 1 and 65535, inclusive"))
            }
            return errors
        case (nil, _?): return []
        case (_?, _?): return [.invalid(field, backend.text(), "cannot set both resource and service backends")]
        case (nil, nil): return [.invalid(field, backend.text(), "resource or service backend is required")]
        }
    }

    static func validateNetworkPolicy(_ o: JSON) -> [FieldError] {
        var errors: [FieldError] = []
        for (i, type) in (o[path: "spec.policyTypes"]?.array ?? []).enumerated() where !["Ingress", "Egress"].contains(type.string ?? "") {
            errors.append(notSupported("spec.policyTypes[\(i)]", type.string ?? type.text(), ["Egress", "Ingress"]))
        }
        if let selector = o[path: "spec.podSelector"], (try? LabelSelector(json: selector)) == nil {
            errors.append(.invalid("spec.podSelector", selector.text(), "not a valid label selector"))
        }
        for (direction, peers) in [("ingress", "from"), ("egress", "to")] {
            for (i, rule) in (o[path: "spec.\(direction)"]?.array ?? []).enumerated() {
                for (j, port) in (rule["ports"]?.array ?? []).enumerated() {
                    let at = "spec.\(direction)[\(i)].ports[\(j)]"
                    if let proto = port["protocol"]?.string, !["TCP", "UDP", "SCTP"].contains(proto) {
                        errors.append(notSupported("\(at).protocol", proto, ["SCTP", "TCP", "UDP"]))
                    }
                    if let end = port["endPort"]?.int {
                        guard let start = port["port"]?.int else {
                            errors.append(FieldError(field: "\(at).endPort", reason: "FieldValueRequired", message: "Required value: may not be specified when `port` is not specified or is a named port"))
                            continue
                        }
                        if end < start { errors.append(.invalid("\(at).endPort", "\(end)", "must be greater than or equal to `port`")) }
                    }
                }
                for (j, peer) in (rule[peers]?.array ?? []).enumerated() {
                    let at = "spec.\(direction)[\(i)].\(peers)[\(j)]"
                    if let block = peer["ipBlock"] {
                        if peer["podSelector"] != nil || peer["namespaceSelector"] != nil {
                            errors.append(FieldError(field: at, reason: "FieldValueForbidden", message: "Forbidden: may not specify both ipBlock and another peer"))
                        }
                        let cidr = block["cidr"]?.string ?? ""
                        if !isCIDR(cidr) { errors.append(.invalid("\(at).ipBlock.cidr", "\"\(cidr)\"", "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")) }
                        for (k, except) in (block["except"]?.array ?? []).enumerated() where !isCIDR(except.string ?? "") {
                            errors.append(.invalid("\(at).ipBlock.except[\(k)]", except.text(), "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"))
                        }
                    }
                }
            }
        }
        return errors
    }

    /// An IPv4 CIDR (kemu's clusters are IPv4), or an IPv6 one in its usual textual form.
    static func isCIDR(_ text: String) -> Bool {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let length = Int(parts[1]) else { return false }
        if parts[0].contains(":") { return (0...128).contains(length) && parts[0].allSatisfy { $0.isHexDigit || $0 == ":" } }
        let octets = parts[0].split(separator: ".", omittingEmptySubsequences: false)
        return (0...32).contains(length) && octets.count == 4 && octets.allSatisfy { Int($0).map { (0...255).contains($0) } ?? false && $0.count <= 3 }
    }
}
