import Foundation
import KemuPKI
import Synchronization

/// Seats for requests in flight, in the spirit of upstream's API Priority and Fairness: the
/// cluster's own components (node agents, proxies, the load balancer) have a lane of their own, so
/// a client flooding the server cannot starve node heartbeats; within a lane each caller (flow)
/// holds at most `perFlow` seats and waits in its own queue for more, served in turn with the
/// others'. A flow whose queue is full gets 429 Too Many Requests (with Retry-After), as upstream's
/// rejected requests do. Long-running requests (watches, followed logs, exec) take no seat.
public final class PriorityLanes: Sendable {
    public struct Limits: Sendable {
        public var seats: Int
        public var perFlow: Int
        public var queuePerFlow: Int
        public init(seats: Int, perFlow: Int, queuePerFlow: Int) {
            self.seats = seats
            self.perFlow = perFlow
            self.queuePerFlow = queuePerFlow
        }
    }

    public enum Lane: String, Sendable, CaseIterable {
        /// A node's heartbeat: its Lease and its Node (upstream's system-node-high level). Apart
        /// from the node's other requests: an agent starting a burst of pods queues dozens of
        /// status writes, events and token requests in its own flow, and a Lease renewal behind
        /// them came later than the lifecycle controller's grace — a busy node was marked NotReady.
        case heartbeat
        /// Node agents, proxies, the load balancer: what keeps the cluster's state fresh.
        case system
        /// Everyone else: users, their tools, in-cluster clients.
        case workload
    }

    struct Waiter {
        let id: Int
        let flow: String
        let continuation: CheckedContinuation<Void, any Error>
    }

    struct LaneState {
        let limits: Limits
        var inFlight = 0
        var byFlow: [String: Int] = [:]
        var waiting: [Waiter] = []
        var queuedByFlow: [String: Int] = [:]
    }

    private let state: Mutex<(lanes: [Lane: LaneState], nextID: Int)>

    /// A seat is CPU, not a connection: a request holds it while its handler runs (a list's
    /// encoding, a write's admission), not while its answer is sent. So the workload lane has
    /// about as many seats as the machine has cores — more would only queue inside the server,
    /// where a node's heartbeat waits behind them (measured in make bench: with 24 seats a
    /// heartbeat waited 640 ms behind six lists of 10k Services on 2 cores).
    public static let cores = max(1, ProcessInfo.processInfo.activeProcessorCount)

    public init(system: Limits = Limits(seats: 4 * PriorityLanes.cores, perFlow: 2 * PriorityLanes.cores, queuePerFlow: 500),
                workload: Limits = Limits(seats: max(2, PriorityLanes.cores), perFlow: max(1, PriorityLanes.cores / 2), queuePerFlow: 1_000),
                heartbeat: Limits = Limits(seats: 2 * PriorityLanes.cores, perFlow: 2, queuePerFlow: 20)) {
        state = Mutex(([.system: LaneState(limits: system), .workload: LaneState(limits: workload),
                        .heartbeat: LaneState(limits: heartbeat)], 0))
    }

    static let componentUsers: Set<String> = ["system:kube-proxy", "system:kemu-lb", "system:kube-controller-manager", "system:kube-scheduler"]

    /// Which lane a caller's requests take.
    public static func lane(of user: Identity?, _ attributes: RequestAttributes? = nil) -> Lane {
        guard let user else { return .workload }
        if user.groups.contains("system:nodes"), let attributes, attributes.verb != "list",
           attributes.group == "coordination.k8s.io" && attributes.resource == "leases" || attributes.group.isEmpty && attributes.resource == "nodes" {
            return .heartbeat
        }
        if user.groups.contains("system:nodes") || componentUsers.contains(user.user) { return .system }
        return .workload
    }

    /// Waits for a seat; throws 429 when the flow's queue is full, CancellationError when the
    /// request goes away while waiting.
    func acquire(_ lane: Lane, flow: String) async throws {
        let id: Int? = try state.withLock { s in
            guard var l = s.lanes[lane] else { return nil }
            if l.inFlight < l.limits.seats, l.byFlow[flow, default: 0] < l.limits.perFlow {
                l.inFlight += 1
                l.byFlow[flow, default: 0] += 1
                s.lanes[lane] = l
                return nil
            }
            guard l.queuedByFlow[flow, default: 0] < l.limits.queuePerFlow else {
                throw APIError(code: 429, reason: "TooManyRequests",
                               message: "too many requests from \(flow) in flight and queued; please try again later")
            }
            s.nextID += 1
            return s.nextID
        }
        guard let id else { return }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let resumeNow: Bool = state.withLock { s in
                    // Cancelled before it queued: do not queue.
                    if Task.isCancelled { return true }
                    s.lanes[lane]?.waiting.append(Waiter(id: id, flow: flow, continuation: continuation))
                    s.lanes[lane]?.queuedByFlow[flow, default: 0] += 1
                    return false
                }
                if resumeNow { continuation.resume(throwing: CancellationError()) }
            }
        } onCancel: {
            let gone: Waiter? = state.withLock { s in
                guard let index = s.lanes[lane]?.waiting.firstIndex(where: { $0.id == id }) else { return nil }
                let waiter = s.lanes[lane]?.waiting.remove(at: index)
                if let waiter { s.lanes[lane]?.queuedByFlow[waiter.flow, default: 1] -= 1 }
                return waiter
            }
            gone?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Gives the seat back and hands it to the first waiter whose flow is under its share, so
    /// flows take turns rather than the longest queue winning.
    func release(_ lane: Lane, flow: String) {
        let next: Waiter? = state.withLock { s in
            guard var l = s.lanes[lane] else { return nil }
            l.inFlight -= 1
            l.byFlow[flow, default: 1] -= 1
            if l.byFlow[flow] == 0 { l.byFlow[flow] = nil }
            var chosen: Waiter?
            if l.inFlight < l.limits.seats, let index = l.waiting.firstIndex(where: { l.byFlow[$0.flow, default: 0] < l.limits.perFlow }) {
                let waiter = l.waiting.remove(at: index)
                l.queuedByFlow[waiter.flow, default: 1] -= 1
                if l.queuedByFlow[waiter.flow] == 0 { l.queuedByFlow[waiter.flow] = nil }
                l.inFlight += 1
                l.byFlow[waiter.flow, default: 0] += 1
                chosen = waiter
            }
            s.lanes[lane] = l
            return chosen
        }
        next?.continuation.resume()
    }

    /// Runs `body` holding a seat.
    func withSeat<T: Sendable>(_ lane: Lane, flow: String, _ body: () async throws -> T) async throws -> T {
        try await acquire(lane, flow: flow)
        defer { release(lane, flow: flow) }
        return try await body()
    }

    /// Seats taken and requests waiting, per lane (for metrics and tests).
    public var usage: [Lane: (inFlight: Int, waiting: Int)] {
        state.withLock { s in s.lanes.mapValues { ($0.inFlight, $0.waiting.count) } }
    }
}
