import Logging
import Synchronization

/// Runs `follow` until the task is cancelled, starting it again whenever it ends or fails: a
/// controller's watch that ends (410 after falling behind) is replaced by a new one, which
/// replays the current state, so a controller never stops by itself.
func rewatching(_ logger: Logger, _ follow: () async throws -> Void) async throws {
    while !Task.isCancelled {
        do {
            try await follow()
        } catch is CancellationError {
            return
        } catch {
            logger.warning("watch ended (\(error)); starting again")
        }
        try await Task.sleep(for: .milliseconds(100))
    }
}

/// Keys waiting to be reconciled, each at most once in the queue.
final class WorkQueue: Sendable {
    private let state = Mutex<(keys: [EndpointSliceController.Key], queued: Set<EndpointSliceController.Key>,
                               waiter: CheckedContinuation<EndpointSliceController.Key?, Never>?)>(([], [], nil))
    /// Failures in a row per key, for the retry backoff.
    private let failures = Mutex<[EndpointSliceController.Key: Int]>([:])
    /// Seconds between two runs of one key (0: none). A key added sooner after its last run waits
    /// out the rest, once, gathering every change meanwhile into that run: upstream's
    /// `--endpointslice-updates-batch-period`. The first change after a quiet spell runs at once.
    let spacing: Double
    /// When each key last ran, and the keys waiting out their spacing.
    private let paced = Mutex<(lastRun: [EndpointSliceController.Key: ContinuousClock.Instant], deferred: Set<EndpointSliceController.Key>)>(([:], []))

    init(spacing: Double = 0) { self.spacing = spacing }

    /// Adds `key` once `seconds` have passed (a condition that changes with time: minReadySeconds,
    /// a progress deadline, a node's grace period).
    func add(_ key: EndpointSliceController.Key, after seconds: Double) {
        Task {
            // Clamped: a deadline from an object (a Job's activeDeadlineSeconds, up to int64
            // seconds) must not overflow the conversion; a year is as good as forever here.
            try? await Task.sleep(for: .milliseconds(Int(min(max(seconds.isNaN ? 0 : seconds, 0), 31_536_000) * 1000)))
            self.add(key)
        }
    }

    func add(_ key: EndpointSliceController.Key) {
        if spacing > 0 {
            let wait: Duration? = paced.withLock { p in
                guard let last = p.lastRun[key] else { return nil }
                let left = last.advanced(by: .milliseconds(Int(spacing * 1000))) - .now
                guard left > .zero else { p.lastRun[key] = nil; return nil }
                return p.deferred.insert(key).inserted ? left : .zero
            }
            if let wait {
                if wait > .zero {
                    Task {
                        try? await Task.sleep(for: wait)
                        _ = self.paced.withLock { $0.deferred.remove(key) }
                        self.enqueue(key)
                    }
                }
                return
            }
        }
        enqueue(key)
    }

    private func enqueue(_ key: EndpointSliceController.Key) {
        let waiter: CheckedContinuation<EndpointSliceController.Key?, Never>? = state.withLock { s in
            if let w = s.waiter {
                s.waiter = nil
                return w
            }
            if s.queued.insert(key).inserted { s.keys.append(key) }
            return nil
        }
        waiter?.resume(returning: key)
    }

    /// The next key, waiting for one; nil once the task is cancelled.
    func next() async -> EndpointSliceController.Key? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let key: EndpointSliceController.Key?? = state.withLock { s in
                    if Task.isCancelled { return .some(nil) }
                    guard !s.keys.isEmpty else { s.waiter = continuation; return nil }
                    let k = s.keys.removeFirst()
                    s.queued.remove(k)
                    return .some(k)
                }
                if let key { continuation.resume(returning: key) }
            }
        } onCancel: {
            let waiter = state.withLock { s in defer { s.waiter = nil }; return s.waiter }
            waiter?.resume(returning: nil)
        }
    }

    /// Takes keys until the task is cancelled and runs `work` on each. A key whose work fails is
    /// logged (`what` names it) and added again after 100 ms, doubling with each failure in a
    /// row up to 30 s: retried, never in a hot loop, while other keys go on.
    /// `failed` hears of each failure with the count in a row and the delay before the retry.
    func process(_ logger: Logger, _ what: @Sendable (EndpointSliceController.Key) -> String,
                 _ work: @Sendable (EndpointSliceController.Key) throws -> Void,
                 failed: @Sendable (EndpointSliceController.Key, any Error, Int, Double) -> Void = { _, _, _, _ in }) async throws {
        while !Task.isCancelled {
            guard let key = await next() else { return }
            if spacing > 0 { paced.withLock { $0.lastRun[key] = .now } }
            do {
                try work(key)
                _ = failures.withLock { $0.removeValue(forKey: key) }
            } catch {
                let count = failures.withLock { f in f[key, default: 0] += 1; return f[key]! }
                logger.warning("\(what(key)) (failure \(count)): \(error)")
                failed(key, error, count, Self.backoff(failures: count))
                add(key, after: Self.backoff(failures: count))
            }
        }
    }

    static func backoff(failures: Int) -> Double { min(0.1 * Double(1 << min(failures - 1, 20)), 30) }
}
