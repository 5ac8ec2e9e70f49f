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
