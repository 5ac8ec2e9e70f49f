import KemuAPI

/// The downward API's `fieldRef` paths a container's environment may name.
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
}
