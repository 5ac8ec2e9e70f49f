import KemuAPI

/// Upstream's validation of rbac.authorization.k8s.io/v1 objects: rules that say what they grant,
/// bindings that name a role and real subjects.
extension Admission {
    static func validateRules(_ o: JSON, _ r: APIResource) -> [FieldError] {
        var errors: [FieldError] = []
        guard let rules = o["rules"] else { return [] }
        guard let list = rules.array else { return [.invalid("rules", rules.text(), "must be a list of rules")] }
        for (i, rule) in list.enumerated() {
            let at = "rules[\(i)]"
            guard rule.object != nil else { errors.append(.invalid(at, rule.text(), "must be an object")); continue }
            for key in ["verbs", "apiGroups", "resources", "resourceNames", "nonResourceURLs"] {
                if let value = rule[key], value.array?.allSatisfy({ $0.string != nil }) != true {
                    errors.append(.invalid("\(at).\(key)", value.text(), "must be a list of strings"))
                }
            }
            let count = { (key: String) in rule[key]?.array?.count ?? 0 }
            if count("verbs") == 0 { errors.append(.required("\(at).verbs")) }
            let nonResource = count("nonResourceURLs") > 0
            let resource = count("apiGroups") > 0 || count("resources") > 0
            if nonResource && resource {
                errors.append(.invalid("\(at).nonResourceURLs", rule["nonResourceURLs"]?.text() ?? "",
                                       "rules cannot apply to both regular resources and non-resource URLs"))
            } else if nonResource && r.kind == "Role" {
                errors.append(.invalid("\(at).nonResourceURLs", rule["nonResourceURLs"]?.text() ?? "",
                                       "namespaced rules cannot apply to non-resource URLs"))
            } else if !nonResource {
                if count("apiGroups") == 0 { errors.append(.required("\(at).apiGroups")) }
                if count("resources") == 0 { errors.append(.required("\(at).resources")) }
            }
        }
        return errors
    }

    static func validateBinding(_ o: JSON, _ r: APIResource) -> [FieldError] {
        var errors: [FieldError] = []
        let kinds = r.kind == "ClusterRoleBinding" ? ["ClusterRole"] : ["Role", "ClusterRole"]
        if o[path: "roleRef.apiGroup"]?.string != "rbac.authorization.k8s.io" {
            errors.append(.invalid("roleRef.apiGroup", "\"\(o[path: "roleRef.apiGroup"]?.string ?? "")\"", "supported values: \"rbac.authorization.k8s.io\""))
        }
        let kind = o[path: "roleRef.kind"]?.string ?? ""
        if !kinds.contains(kind) {
            errors.append(.invalid("roleRef.kind", "\"\(kind)\"", "supported values: " + kinds.map { "\"\($0)\"" }.joined(separator: ", ")))
        }
        if (o[path: "roleRef.name"]?.string ?? "").isEmpty { errors.append(.required("roleRef.name")) }
        if let subjects = o["subjects"], subjects.array == nil {
            errors.append(.invalid("subjects", subjects.text(), "must be a list of subjects"))
        }
        for (i, subject) in (o["subjects"]?.array ?? []).enumerated() {
            let at = "subjects[\(i)]"
            let kind = subject["kind"]?.string ?? ""
            if (subject["name"]?.string ?? "").isEmpty { errors.append(.required("\(at).name")) }
            switch kind {
            case "User", "Group":
                if let group = subject["apiGroup"]?.string, group != "rbac.authorization.k8s.io" {
                    errors.append(.invalid("\(at).apiGroup", "\"\(group)\"", "supported values: \"rbac.authorization.k8s.io\""))
                }
            case "ServiceAccount":
                if (subject["namespace"]?.string ?? "").isEmpty && r.kind == "ClusterRoleBinding" { errors.append(.required("\(at).namespace")) }
            default:
                errors.append(.invalid("\(at).kind", "\"\(kind)\"", "supported values: \"ServiceAccount\", \"User\", \"Group\""))
            }
        }
        return errors
    }

    /// A binding's roleRef cannot change (upstream: delete and recreate it).
    /// What an update may not change, beyond the create-time rules.
    static func validateUpdate(_ new: JSON, _ old: JSON, _ r: APIResource) throws {
        var errors = validateConfigurationUpdate(new, old, r)
        if r.kind == "CertificateSigningRequest" { errors += validateCertificateRequestUpdate(new, old) }
        if r.kind.hasSuffix("RoleBinding"), new["roleRef"] != old["roleRef"] {
            errors.append(.invalid("roleRef", new["roleRef"]?.text() ?? "null", "cannot change roleRef"))
        }
        if !errors.isEmpty { throw APIError.invalid(r, name: new.name, errors) }
    }
}
