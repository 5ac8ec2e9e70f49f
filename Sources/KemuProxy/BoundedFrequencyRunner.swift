import Synchronization

/// kube-proxy's `async.BoundedFrequencyRunner`: runs a sync function when asked, but never more
/// often than once per `minInterval` (a burst of changes is applied together), at least once per
/// `maxInterval` even when nobody asks (a periodic resync that also retries whatever is left), and
/// again `retryInterval` after a sync that reports failure, without waiting for another change.
public final class BoundedFrequencyRunner: Sendable {
    public struct Intervals: Sendable {
        public var min: Duration
        public var max: Duration
        public var retry: Duration
        /// The gap after a sync is at least this many times the sync's own duration (0: off), so
        /// syncing takes at most 1/(1 + busy) of the time: a proxy whose syncs grow slow (a
        /// Service of 1,000 endpoints re-planned, a machine short of CPU) gathers more changes
        /// into each instead of syncing back to back while a storm of changes lasts. The gap this
        /// makes is at most 1 s, kube-proxy's default minSyncPeriod.
        public var busy: Double

        public init(min: Duration, max: Duration, retry: Duration, busy: Double = 0) {
            self.min = min
            self.max = max
            self.retry = retry
            self.busy = busy
        }
    }

    public let intervals: Intervals

    private struct Signal {
        var pending = false
        var waiter: CheckedContinuation<Void, Never>?
        /// Counts waits, so a timer left over from an earlier one cannot wake a later one.
        var generation: UInt64 = 0
    }

    private let signal = Mutex(Signal())

    public init(_ intervals: Intervals) { self.intervals = intervals }

    /// Asks for a sync: the next one starts as soon as the minimum interval allows.
    public func request() {
        let waiter = signal.withLock { s -> CheckedContinuation<Void, Never>? in
            guard let w = s.waiter else { s.pending = true; return nil }
            s.waiter = nil
            return w
        }
        waiter?.resume()
    }

    /// Calls `sync` (never two at once) until cancelled; `sync` returns whether it succeeded.
    public func run(_ sync: @Sendable () async -> Bool) async {
        let clock = ContinuousClock()
        var last: ContinuousClock.Instant?
        // The earliest the next sync may start: a minimum interval after the last one began, and
        // its busy gap after it ended.
        var earliest = clock.now
        var failed = false
        while !Task.isCancelled {
            if let last {
                await wait(until: last + (failed ? intervals.retry : intervals.max))
                if clock.now < earliest { try? await Task.sleep(until: earliest, clock: clock) }
            } else {
                await wait(until: clock.now + intervals.max)
            }
            if Task.isCancelled { return }
            signal.withLock { $0.pending = false }  // the sync about to run covers every request so far
            let began = clock.now
            last = began
            failed = !(await sync())
            let ended = clock.now
            // The busy gap is never longer than kube-proxy's own default minSyncPeriod (1 s).
            earliest = Swift.max(began + intervals.min, ended + Swift.min((ended - began) * intervals.busy, .seconds(1)))
        }
    }

    /// Returns at `deadline`, at a request (also one made before the call), or when cancelled.
    /// The timer is not awaited when a request comes first: waking the caller costs one hop.
    private func wait(until deadline: ContinuousClock.Instant) async {
        let generation = signal.withLock { s -> UInt64 in
            s.generation &+= 1
            return s.generation
        }
        let timer = Task {
            try? await Task.sleep(until: deadline, clock: .continuous)
            if !Task.isCancelled { self.wakeWaiter(generation) }
        }
        defer { timer.cancel() }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                // Checked under the lock the timer and cancellation wake through: whichever
                // came before the waiter was in place is seen here.
                let now = signal.withLock { s -> Bool in
                    if s.pending || Task.isCancelled || ContinuousClock.now >= deadline { return true }
                    s.waiter = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            self.wakeWaiter(nil)
        }
    }

    /// Resumes a waiting `wait` (of `generation`, or any) without leaving a request behind.
    private func wakeWaiter(_ generation: UInt64?) {
        let waiter = signal.withLock { s -> CheckedContinuation<Void, Never>? in
            guard generation == nil || generation == s.generation else { return nil }
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume()
    }
}
