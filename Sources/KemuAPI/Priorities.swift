/// Upstream's Priority admission, for a new pod: `spec.priority` (and `preemptionPolicy`) from
/// the PriorityClass its `priorityClassName` names, or from the class marked `globalDefault`
/// (else 0) when it names none. A name no class has is refused with upstream's message; a pod
/// that sets `spec.priority` itself must agree with its class.
public enum Priorities {
    /// nil when admitted (the pod filled in), else why not.
    public static func apply(to pod: inout JSON, classes: [JSON]) -> String? {
        let named = pod[path: "spec.priorityClassName"]?.string ?? ""
        let chosen: JSON?
        if named.isEmpty {
            chosen = classes.filter { $0["globalDefault"]?.bool == true }.max { ($0["value"]?.int ?? 0) < ($1["value"]?.int ?? 0) }
        } else {
            guard let found = classes.first(where: { $0.name == named }) else { return "no PriorityClass with name \(named) was found" }
            chosen = found
        }
        let value = chosen?["value"]?.int ?? 0
        if let given = pod[path: "spec.priority"]?.int, given != value {
            return "the integer value of priority (\(given)) must not be provided in pod spec; priority admission controller computed \(value) from the given PriorityClass name"
        }
        pod["spec", default: [:]]["priority"] = .int(value)
        if let chosen, !named.isEmpty || chosen["globalDefault"]?.bool == true {
            if named.isEmpty { pod["spec", default: [:]]["priorityClassName"] = .string(chosen.name) }
            pod["spec", default: [:]]["preemptionPolicy"] = chosen["preemptionPolicy"] ?? "PreemptLowerPriority"
        } else if pod[path: "spec.preemptionPolicy"] == nil {
            pod["spec", default: [:]]["preemptionPolicy"] = "PreemptLowerPriority"
        }
        return nil
    }
}
