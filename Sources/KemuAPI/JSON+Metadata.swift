/// `metadata` of a Kubernetes object, read and written in place on its JSON tree.
extension JSON {
    /// `metadata.KEY`, read without parsing a path (these are read for every object a list filters).
    @inline(__always) func metadataField(_ key: String) -> JSON? { self.object?["metadata"]?.object?[key] }

    public var name: String {
        get { metadataField("name")?.string ?? "" }
        set { self["metadata", default: [:]]["name"] = .string(newValue) }
    }

    /// "" for cluster-scoped objects.
    public var namespace: String {
        get { metadataField("namespace")?.string ?? "" }
        set { self["metadata", default: [:]]["namespace"] = newValue.isEmpty ? nil : .string(newValue) }
    }

    public var uid: String {
        get { metadataField("uid")?.string ?? "" }
        set { self["metadata", default: [:]]["uid"] = .string(newValue) }
    }

    /// The decimal resourceVersion, or nil when absent or not a number.
    public var resourceVersion: Int64? {
        get { metadataField("resourceVersion")?.string.flatMap { Int64($0) } }
        set { self["metadata", default: [:]]["resourceVersion"] = newValue.map { .string(String($0)) } }
    }

    public var generation: Int64 {
        get { metadataField("generation")?.int ?? 0 }
        set { self["metadata", default: [:]]["generation"] = .int(newValue) }
    }

    public var labels: [String: String] {
        get { Self.stringMap(metadataField("labels")) }
        set { self["metadata", default: [:]]["labels"] = newValue.isEmpty ? nil : Self.stringMapJSON(newValue) }
    }

    public var annotations: [String: String] {
        get { Self.stringMap(metadataField("annotations")) }
        set { self["metadata", default: [:]]["annotations"] = newValue.isEmpty ? nil : Self.stringMapJSON(newValue) }
    }

    public var deletionTimestamp: String? { metadataField("deletionTimestamp")?.string }
    /// The uids in `metadata.ownerReferences`.
    public var ownerUIDs: [String] { (metadataField("ownerReferences")?.array ?? []).compactMap { $0["uid"]?.string } }
    /// Drops the ownerReference to `uid` (and the list, once empty).
    public mutating func removeOwnerReference(_ uid: String) {
        let kept = (metadataField("ownerReferences")?.array ?? []).filter { $0["uid"]?.string != uid }
        self["metadata", default: [:]]["ownerReferences"] = kept.isEmpty ? nil : .array(kept)
    }
    /// `metadata.finalizers`: what must happen before a deleted object goes.
    public var finalizers: [String] {
        get { (metadataField("finalizers")?.array ?? []).compactMap(\.string) }
        set { self["metadata", default: [:]]["finalizers"] = newValue.isEmpty ? nil : .array(newValue.map { .string($0) }) }
    }
    public var kind: String { self["kind"]?.string ?? "" }
    public var apiVersion: String { self["apiVersion"]?.string ?? "" }

    /// A member that is created empty when missing, for nested writes: `obj["metadata", default: [:]]["name"] = …`.
    public subscript(key: String, default fallback: JSON) -> JSON {
        get { self[key] ?? fallback }
        set { self[key] = newValue }
    }

    public static func stringMap(_ json: JSON?) -> [String: String] {
        var result: [String: String] = [:]
        for (k, v) in json?.object ?? JSONObject() { if let s = v.string { result[k] = s } }
        return result
    }

    public static func stringMapJSON(_ map: [String: String]) -> JSON {
        var o = JSONObject()
        for k in map.keys.sorted() { o[k] = .string(map[k]!) }
        return .object(o)
    }
}
