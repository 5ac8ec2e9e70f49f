/// core/v1 Events, as the components that report them write them (kubelet, the scheduler, the
/// cloud load balancer). `at` is an RFC 3339 time (KemuAPI keeps no clock).
public enum Events {
    public static func make(for object: JSON, kind: String, apiVersion: String = "v1", type: String, reason: String,
                            message: String, component: String, host: String? = nil, at now: String) -> JSON {
        var source: JSON = ["component": .string(component)]
        if let host { source["host"] = .string(host) }
        var event: JSON = [
            "apiVersion": "v1", "kind": "Event",
            "involvedObject": ["kind": .string(kind), "namespace": .string(object.namespace), "name": .string(object.name),
                               "uid": .string(object.uid), "apiVersion": .string(apiVersion)],
            "reason": .string(reason), "message": .string(message), "type": .string(type),
            "source": source, "firstTimestamp": .string(now), "lastTimestamp": .string(now), "count": 1,
            "reportingComponent": .string(component), "reportingInstance": .string(host ?? component),
        ]
        event.name = "\(object.name).\(String(UInt64.random(in: 0...UInt64.max), radix: 16))"
        event.namespace = object.namespace.isEmpty ? "default" : object.namespace
        return event
    }
}

/// events.k8s.io/v1: the same Events, each field under its newer name (upstream stores one
/// object and converts; so does kemu). `regarding` is `involvedObject`, `note` is `message`,
/// `reportingController` is `reportingComponent`, and the core fields that the newer API keeps
/// only for compatibility are `deprecatedSource`, `deprecatedFirstTimestamp`,
/// `deprecatedLastTimestamp`, `deprecatedCount`.
public enum EventsV1 {
    public static let apiVersion = "events.k8s.io/v1"
    /// core name → events.k8s.io/v1 name; the rest (metadata, reason, type, action, related,
    /// eventTime, series, reportingInstance) have the same name in both.
    static let renamed: [(core: String, v1: String)] = [
        ("involvedObject", "regarding"), ("message", "note"), ("reportingComponent", "reportingController"),
        ("source", "deprecatedSource"), ("firstTimestamp", "deprecatedFirstTimestamp"),
        ("lastTimestamp", "deprecatedLastTimestamp"), ("count", "deprecatedCount"),
    ]

    /// A stored (core) Event as events.k8s.io/v1 shows it.
    public static func outward(_ core: JSON) -> JSON {
        guard var object = core.object else { return core }
        for (from, to) in renamed {
            if let value = object[from] { object[from] = nil; object[to] = value }
        }
        object["apiVersion"] = .string(apiVersion)
        if object["eventTime"] == nil { object["eventTime"] = .null }
        return .object(object)
    }

    /// An events.k8s.io/v1 Event as it is stored (core), for a create, update or patch.
    public static func inward(_ v1: JSON) -> JSON {
        guard var object = v1.object else { return v1 }
        for (from, to) in renamed {
            if let value = object[to] { object[to] = nil; object[from] = value }
        }
        if object["apiVersion"]?.string == apiVersion { object["apiVersion"] = "v1" }
        return .object(object)
    }
}
