@testable import KemuAPIServer
import KemuPKI
import KemuTestSupport
import Testing

/// Seats and lanes without a server: a flow beyond its share waits, other flows and the system
/// lane do not wait behind it, and a full queue is a 429. (A wrong count of waiters would leave a
/// request waiting for ever: the time limit makes that a failure, not a hung run.)
@Suite(.timeLimit(.minutes(1))) struct PriorityLanesTests {
    let small = PriorityLanes.Limits(seats: 4, perFlow: 2, queuePerFlow: 2)

    @Test func aFlowBeyondItsShareWaitsWhileOthersPass() async throws {
        let lanes = PriorityLanes(system: small, workload: small)
        try await lanes.acquire(.workload, flow: "noisy")
        try await lanes.acquire(.workload, flow: "noisy")
        // The noisy flow's third request waits for one of its own to finish …
        let third = Task { try await lanes.acquire(.workload, flow: "noisy") }
        #expect(await eventually(10) { lanes.usage[.workload]?.waiting == 1 })
        // … while another flow and the system lane get seats at once.
        try await lanes.acquire(.workload, flow: "quiet")
        try await lanes.acquire(.system, flow: "system:node:n1")
        #expect(lanes.usage[.workload]?.inFlight == 3 && lanes.usage[.system]?.inFlight == 1)
        // A release by another flow does not hand the seat to a flow at its share …
        lanes.release(.workload, flow: "quiet")
        #expect(lanes.usage[.workload]?.waiting == 1)
        // … its own release does.
        lanes.release(.workload, flow: "noisy")
        try await third.value
        #expect(lanes.usage[.workload]?.inFlight == 2 && lanes.usage[.workload]?.waiting == 0)
    }

    @Test func aFullQueueIsTooManyRequestsAndCancelledWaitersLeaveIt() async throws {
        let lanes = PriorityLanes(system: small, workload: small)
        for _ in 0..<2 { try await lanes.acquire(.workload, flow: "noisy") }
        let queued = (0..<2).map { _ in Task { try await lanes.acquire(.workload, flow: "noisy") } }
        // Both queued before the fifth asks (each task runs when the machine gets to it).
        try #require(await eventually(10) { lanes.usage[.workload]?.waiting == 2 })
        do {
            try await lanes.acquire(.workload, flow: "noisy")
            Issue.record("a fifth request from one flow was accepted")
        } catch let error as APIError {
            #expect(error.code == 429 && error.reason == "TooManyRequests")
        }
        queued[0].cancel()
        await #expect(throws: CancellationError.self) { try await queued[0].value }
        #expect(lanes.usage[.workload]?.waiting == 1)
        lanes.release(.workload, flow: "noisy")
        try await queued[1].value
        #expect(lanes.usage[.workload]?.inFlight == 2 && lanes.usage[.workload]?.waiting == 0)
    }

    @Test func componentsTakeTheSystemLane() {
        #expect(PriorityLanes.lane(of: Identity(user: "system:node:n1", groups: ["system:nodes"])) == .system)
        #expect(PriorityLanes.lane(of: Identity(user: "system:kube-proxy", groups: [])) == .system)
        #expect(PriorityLanes.lane(of: Identity(user: "kemu-admin", groups: ["system:masters"])) == .workload)
        // A node's Lease and Node writes are its heartbeat, apart from its pods' traffic.
        let node = Identity(user: "system:node:n1", groups: ["system:nodes"])
        #expect(PriorityLanes.lane(of: node, RequestAttributes(verb: "patch", group: "coordination.k8s.io", resource: "leases", name: "n1")) == .heartbeat)
        #expect(PriorityLanes.lane(of: node, RequestAttributes(verb: "patch", resource: "nodes", subresource: "status", name: "n1")) == .heartbeat)
        #expect(PriorityLanes.lane(of: node, RequestAttributes(verb: "patch", resource: "pods", subresource: "status", name: "p")) == .system)
        #expect(PriorityLanes.lane(of: Identity(user: "kemu-admin", groups: ["system:masters"]),
                                   RequestAttributes(verb: "update", group: "coordination.k8s.io", resource: "leases")) == .workload)
        #expect(PriorityLanes.lane(of: Identity(user: "system:node:n1", groups: [])) == .workload)
        #expect(PriorityLanes.lane(of: nil) == .workload)
    }
}
