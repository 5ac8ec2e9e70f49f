import KemuAPI

/// `?fieldValidation=Strict|Warn|Ignore`, as upstream: what to do with fields the kind does not
/// have — refuse the request (400, kubectl's default since 1.27), answer with a Warning header
/// (the default without the parameter), or say nothing. kemu knows every kind's top-level fields
/// and ObjectMeta's; fields deeper inside a spec are not checked yet (a typo there is kept, as
/// with Ignore), since refusing a field kemu merely does not list would break valid manifests.
enum FieldValidation: String {
    case strict = "Strict", warn = "Warn", ignore = "Ignore"

    init(_ query: Query) throws {
        guard let text = query["fieldValidation"] else { self = .warn; return }
        guard let value = FieldValidation(rawValue: text) else {
            throw APIError.badRequest("fieldValidation: Unsupported value: \"\(text.prefix(64))\": supported values: \"Ignore\", \"Strict\", \"Warn\"")
        }
        self = value
    }

    static let common: Set<String> = ["apiVersion", "kind", "metadata"]
    static let specAndStatus: Set<String> = ["spec", "status"]

    /// Kind → its fields besides apiVersion, kind and metadata.
    static let topLevel: [String: Set<String>] = {
        var fields: [String: Set<String>] = [:]
        for kind in ["Namespace", "Pod", "Service", "Node", "PersistentVolumeClaim", "ReplicationController", "Deployment", "ReplicaSet",
                     "StatefulSet", "Fault", "SelfSubjectAccessReview", "SelfSubjectRulesReview", "SubjectAccessReview",
                     "LocalSubjectAccessReview", "SelfSubjectReview"] {
            fields[kind] = specAndStatus
        }
        fields["ConfigMap"] = ["data", "binaryData", "immutable"]
        fields["Endpoints"] = ["subsets"]
        fields["EndpointSlice"] = ["addressType", "endpoints", "ports"]
        fields["ControllerRevision"] = ["data", "revision"]
        fields["Event"] = ["involvedObject", "reason", "message", "source", "firstTimestamp", "lastTimestamp", "count", "type", "eventTime",
                           "series", "action", "related", "reportingComponent", "reportingInstance"]
        fields["Role"] = ["rules"]
        fields["ClusterRole"] = ["rules", "aggregationRule"]
        fields["RoleBinding"] = ["subjects", "roleRef"]
        fields["ClusterRoleBinding"] = ["subjects", "roleRef"]
        return fields
    }()

    static let metadata: Set<String> = ["name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
                                        "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
                                        "ownerReferences", "finalizers", "managedFields"]

    /// The fields of `o` its kind does not have, as paths (`spec2`, `metadata.lables`).
    static func unknownFields(_ o: JSON, _ r: APIResource) -> [String] {
        guard let known = topLevel[r.kind], let object = o.object else { return [] }
        var unknown = object.keys.filter { !common.contains($0) && !known.contains($0) }
        if let meta = o["metadata"]?.object { unknown += meta.keys.filter { !metadata.contains($0) }.map { "metadata.\($0)" } }
        return unknown
    }

    /// Throws for Strict; returns the Warning header values for Warn.
    func check(_ o: JSON, _ r: APIResource) throws -> [String] {
        guard self != .ignore else { return [] }
        let unknown = Self.unknownFields(o, r)
        guard !unknown.isEmpty else { return [] }
        if self == .strict {
            throw APIError.badRequest("strict decoding error: " + unknown.map { "unknown field \"\($0)\"" }.joined(separator: ", "))
        }
        return unknown.map { "299 - \"unknown field \\\"\($0)\\\"\"" }
    }
}
