import Foundation
import KemuAPI
import KemuSystem

/// The downward API: the `fieldRef` paths and `resourceFieldRef` resources a container's
/// environment and a downwardAPI volume may name.
extension NodeAgent {
    func fieldValue(_ path: String, pod: JSON, podIP: String) -> String {
        switch path {
        case "metadata.name": return pod.name
        case "metadata.namespace": return pod.namespace
        case "metadata.uid": return pod.uid
        case "spec.nodeName": return config.nodeName
        case "spec.serviceAccountName": return pod[path: "spec.serviceAccountName"]?.string ?? "default"
        case "status.podIP": return podIP
        case "status.hostIP": return nodeIP
        default:
            if path.hasPrefix("metadata.labels['"), path.hasSuffix("']") {
                return pod.labels[String(path.dropFirst("metadata.labels['".count).dropLast(2))] ?? ""
            }
            if path.hasPrefix("metadata.annotations['"), path.hasSuffix("']") {
                return pod.annotations[String(path.dropFirst("metadata.annotations['".count).dropLast(2))] ?? ""
            }
            return ""
        }
    }

    /// A container's request or limit (`limits.cpu`, `requests.memory`…) divided by `divisor`
    /// and rounded up, as kubelet gives it; an unset limit is the node's capacity (cluster.yaml's
    /// cpu and memory for it). `container` is the one named by `containerName`, else the one asking.
    func resourceValue(_ reference: JSON, pod: JSON, container asking: JSON?) throws -> String {
        let resource = reference["resource"]?.string ?? ""
        let containers = (pod[path: "spec.containers"]?.array ?? []) + (pod[path: "spec.initContainers"]?.array ?? [])
        let named = reference["containerName"]?.string
        guard let container = named.map({ n in containers.first { $0["name"]?.string == n } }) ?? asking else {
            throw KemuError(.invalidArgument, "resourceFieldRef: container \"\(named ?? "")\" is not in the pod")
        }
        let parts = resource.split(separator: ".", maxSplits: 1).map(String.init)
        guard parts.count == 2, ["limits", "requests"].contains(parts[0]), ["cpu", "memory", "ephemeral-storage"].contains(parts[1]) else {
            throw KemuError(.invalidArgument, "resourceFieldRef: unsupported resource \"\(resource)\"")
        }
        let capacity: Int64 = Quantity.milli(parts[1] == "cpu" ? config.cpu : config.memory)
            ?? Int64(clamping: ProcessInfo.processInfo.physicalMemory) * 1000
        var value = Quantity.milli(container[path: "resources.\(resource)"])
        if value == nil, parts[0] == "requests" { value = Quantity.milli(container[path: "resources.limits.\(parts[1])"]) }
        let amount = value ?? (parts[0] == "limits" ? capacity : 0)
        let divisor = max(Quantity.milli(reference["divisor"]) ?? 1000, 1)
        if parts[1] == "cpu" && reference["divisor"] == nil {
            return String(amount / 1000 + (amount % 1000 == 0 ? 0 : 1))  // whole cores, rounded up
        }
        return String(amount / divisor + (amount % divisor == 0 ? 0 : 1))
    }
}
