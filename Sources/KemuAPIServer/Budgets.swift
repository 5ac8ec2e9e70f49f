import Foundation
import KemuAPI
import KemuStore

/// The eviction subresource's check against PodDisruptionBudgets, as upstream's: a finished pod
/// goes freely; otherwise the one budget whose selector matches the pod (more than one is an
/// error) must have seen its latest spec and allow a disruption, which the eviction spends —
/// atomically, in the budget's status, naming the pod in `disruptedPods` — or the answer is 429
/// TooManyRequests, on which `kubectl drain` waits and retries. A pod that is not Ready spends
/// nothing: it goes when the budget is met anyway (`IfHealthyBudget`, the default) or always
/// (`AlwaysAllow`).
struct Budgets {
    static let resource = "poddisruptionbudgets.policy"
    let store: Store

    func admit(eviction pod: JSON, dryRun: Bool) throws {
        let phase = pod[path: "status.phase"]?.string ?? ""
        if phase == "Succeeded" || phase == "Failed" || pod.deletionTimestamp != nil { return }
        let budgets = store.list(Self.resource, namespace: pod.namespace).items.filter {
            (try? LabelSelector(json: $0[path: "spec.selector"]))?.matches(pod.labels) == true
        }
        guard let budget = budgets.first else { return }
        if budgets.count > 1 {
            throw APIError(code: 500, reason: "InternalError",
                           message: "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.")
        }
        let ready = (pod[path: "status.conditions"]?.array ?? []).contains { $0["type"]?.string == "Ready" && $0["status"]?.string == "True" }
        if !ready {
            if budget[path: "spec.unhealthyPodEvictionPolicy"]?.string == "AlwaysAllow" { return }
            let healthy = budget[path: "status.currentHealthy"]?.int ?? 0, desired = budget[path: "status.desiredHealthy"]?.int ?? 0
            if Self.observed(budget), healthy >= desired, budget[path: "status.expectedPods"] != nil { return }
        }
        let spend = { (b: inout JSON) throws in
            guard Self.observed(b) else {
                throw Self.refusal("The disruption budget \(b.name) is still being processed by the server.")
            }
            let allowed = b[path: "status.disruptionsAllowed"]?.int ?? 0
            guard allowed > 0 else {
                let needs = b[path: "status.desiredHealthy"]?.int ?? 0, has = b[path: "status.currentHealthy"]?.int ?? 0
                throw Self.refusal("The disruption budget \(b.name) needs \(needs) healthy pods and has \(has) currently")
            }
            b["status", default: [:]]["disruptionsAllowed"] = .int(allowed - 1)
            var disrupted = b[path: "status.disruptedPods"]?.object ?? JSONObject()
            disrupted[pod.name] = .string(Timestamp.now())
            b["status", default: [:]]["disruptedPods"] = .object(disrupted)
        }
        if dryRun {
            var copy = budget
            try spend(&copy)
        } else {
            do {
                try store.modify(Self.resource, namespace: budget.namespace, name: budget.name, part: .status) { b in
                    guard b.uid == budget.uid else { throw StoreError.notFound(resource: Self.resource, name: budget.name) }
                    try spend(&b)
                }
            } catch StoreError.notFound {
                return  // the budget went meanwhile: nothing to honour
            }
        }
    }

    static func observed(_ budget: JSON) -> Bool {
        guard let seen = budget[path: "status.observedGeneration"]?.int else { return false }
        return seen >= budget.generation
    }

    static func refusal(_ cause: String) -> APIError {
        APIError(code: 429, reason: "TooManyRequests", message: "Cannot evict pod as it would violate the pod's disruption budget.",
                 causes: [.init(reason: "DisruptionBudget", message: cause, field: "")])
    }
}
