import Foundation

/// LimitRange, as upstream's LimitRanger admission applies it to a new pod: each container gets
/// the `default` limits and `defaultRequest` requests it does not state (type Container), then
/// every container (and, for type Pod, their sum) must lie within `min` and `max` and under
/// `maxLimitRequestRatio`. Shared by the API server and the controllers' pod creation.
public enum LimitRanges {
    /// The LimitRange's own defaults, as upstream's API defaulting: `default` from `max`,
    /// `defaultRequest` from `default` (or `min`).
    public static func defaulted(_ range: JSON) -> JSON {
        var range = range
        guard var limits = range[path: "spec.limits"]?.array else { return range }
        for i in limits.indices where (limits[i]["type"]?.string ?? "Container") == "Container" {
            var item = limits[i]
            var defaults = item["default"]?.object ?? JSONObject()
            for (name, value) in item["max"]?.object ?? JSONObject() where defaults[name] == nil { defaults[name] = value }
            var requests = item["defaultRequest"]?.object ?? JSONObject()
            for (name, value) in defaults where requests[name] == nil { requests[name] = value }
            for (name, value) in item["min"]?.object ?? JSONObject() where requests[name] == nil { requests[name] = value }
            if !defaults.isEmpty { item["default"] = .object(defaults) }
            if !requests.isEmpty { item["defaultRequest"] = .object(requests) }
            limits[i] = item
        }
        range["spec", default: [:]]["limits"] = .array(limits)
        return range
    }

    /// Applies the ranges' defaults to `pod` and returns what breaks their bounds, in upstream's
    /// words (`maximum cpu usage per Container is 1, but limit is 2`); empty when it fits.
    public static func apply(to pod: inout JSON, _ ranges: [JSON]) -> [String] {
        var problems: [String] = []
        for range in ranges.sorted(by: { $0.name < $1.name }) {
            for item in defaulted(range)[path: "spec.limits"]?.array ?? [] {
                let type = item["type"]?.string ?? "Container"
                if type == "Container" {
                    for kind in ["containers", "initContainers"] {
                        guard var containers = pod[path: "spec.\(kind)"]?.array else { continue }
                        for i in containers.indices {
                            var resources = containers[i]["resources"] ?? [:]
                            for (field, from) in [("limits", "default"), ("requests", "defaultRequest")] {
                                var stated = resources[field]?.object ?? JSONObject()
                                for (name, value) in item[from]?.object ?? JSONObject() where stated[name] == nil { stated[name] = value }
                                if !stated.isEmpty { resources[field] = .object(stated) }
                            }
                            containers[i]["resources"] = resources
                            problems += check(item, requests: resources["requests"], limits: resources["limits"], scope: "Container")
                        }
                        pod["spec", default: [:]][kind] = .array(containers)
                    }
                } else if type == "Pod" {
                    var requests = JSONObject(), limits = JSONObject()
                    for c in pod[path: "spec.containers"]?.array ?? [] {
                        for (target, field) in [(0, "requests"), (1, "limits")] {
                            for (name, value) in c[path: "resources.\(field)"]?.object ?? JSONObject() {
                                let sum = (Quantity.milli(target == 0 ? requests[name] : limits[name]) ?? 0) &+ (Quantity.milli(value) ?? 0)
                                let text = JSON.string(Quota.format(sum, name: name))
                                if target == 0 { requests[name] = text } else { limits[name] = text }
                            }
                        }
                    }
                    problems += check(item, requests: .object(requests), limits: .object(limits), scope: "Pod")
                }
            }
        }
        return problems
    }

    static func check(_ item: JSON, requests: JSON?, limits: JSON?, scope: String) -> [String] {
        var problems: [String] = []
        for (name, bound) in (item["min"]?.object ?? JSONObject()).sorted(by: { $0.key < $1.key }) {
            guard let min = Quantity.milli(bound) else { continue }
            if let request = requests?[name], (Quantity.milli(request) ?? 0) < min {
                problems.append("minimum \(name) usage per \(scope) is \(bound.string ?? bound.text()), but request is \(request.string ?? request.text())")
            } else if requests?[name] == nil {
                problems.append("minimum \(name) usage per \(scope) is \(bound.string ?? bound.text()), but no request is specified")
            }
        }
        for (name, bound) in (item["max"]?.object ?? JSONObject()).sorted(by: { $0.key < $1.key }) {
            guard let max = Quantity.milli(bound) else { continue }
            if let limit = limits?[name], (Quantity.milli(limit) ?? 0) > max {
                problems.append("maximum \(name) usage per \(scope) is \(bound.string ?? bound.text()), but limit is \(limit.string ?? limit.text())")
            } else if limits?[name] == nil {
                problems.append("maximum \(name) usage per \(scope) is \(bound.string ?? bound.text()), but no limit is specified")
            }
        }
        for (name, bound) in (item["maxLimitRequestRatio"]?.object ?? JSONObject()).sorted(by: { $0.key < $1.key }) {
            guard let ratio = Quantity.milli(bound), let limit = limits?[name].flatMap(Quantity.milli), let request = requests?[name].flatMap(Quantity.milli),
                  request > 0, Double(limit) / Double(request) > Double(ratio) / 1000 else { continue }
            problems.append("\(name) max limit to request ratio per \(scope) is \(bound.string ?? bound.text()), but provided ratio is \(String(format: "%.6f", Double(limit) / Double(request)))")
        }
        return problems
    }
}
