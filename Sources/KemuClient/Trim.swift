import KemuAPI

/// Informer transforms for the node's Service consumers (proxy, DNS): they keep only what those
/// read, so a node following 10,000 Services caches less.
public enum Trim {
    /// Name, labels, annotations, resourceVersion; the spec; the load-balancer status.
    @Sendable public static func service(_ o: JSON) -> JSON {
        var t: JSON = ["metadata": metadata(o)]
        t["spec"] = o["spec"]
        if let lb = o[path: "status.loadBalancer"] { t["status"] = ["loadBalancer": lb] }
        return t
    }

    /// Addresses, conditions, hostnames, nodes and pods of the endpoints; the ports.
    @Sendable public static func endpointSlice(_ o: JSON) -> JSON {
        var t: JSON = ["metadata": metadata(o), "addressType": o["addressType"] ?? "IPv4", "ports": o["ports"] ?? []]
        t["endpoints"] = .array((o["endpoints"]?.array ?? []).map { e in
            var kept: JSON = ["addresses": e["addresses"] ?? [], "conditions": e["conditions"] ?? [:]]
            for key in ["nodeName", "hostname"] { if let v = e[key] { kept[key] = v } }
            if let ref = e["targetRef"] { kept["targetRef"] = ["namespace": ref["namespace"] ?? "", "name": ref["name"] ?? ""] }
            return kept
        })
        return t
    }

    static func metadata(_ o: JSON) -> JSON {
        var m: JSON = ["name": .string(o.name), "namespace": .string(o.namespace)]
        for key in ["uid", "resourceVersion", "labels", "annotations"] { if let v = o[path: "metadata.\(key)"] { m[key] = v } }
        return m
    }
}
