import KemuSystem
import Synchronization

/// Commands for the engine's thread from any other. `send` wakes the thread (once for a batch:
/// it takes the whole inbox); `post` queues without waking it, for what may wait for its next
/// turn — under load it turns every few hundred microseconds anyway, and a wake-up a report
/// was what a carried connection cost the engine most (the mesh reports three a connection,
/// and each woke the thread, which then took the mesh's core from it). Whoever posts wakes the
/// thread (`wake`) once its commands can wait no longer.
public final class EngineInbox: Sendable {
    private struct State {
        var commands: [EngineCommand] = []
        /// The eventfd was written since the thread last took the inbox.
        var signalled = false
        /// How many times the thread took the inbox.
        var takes = 0
    }

    private let state = Mutex(State())
    let signal: EventSignal

    init() throws { signal = try EventSignal() }

    /// Queues commands and wakes the engine's thread.
    public func send(_ commands: [EngineCommand]) {
        guard !commands.isEmpty else { return }
        enqueue(commands, wake: true)
    }

    /// Queues commands without waking the thread; returns the mark to wake it by (`wake`).
    @discardableResult
    public func post(_ commands: [EngineCommand]) -> Int { enqueue(commands, wake: false) }

    /// Wakes the thread unless it took the inbox since the post that returned `mark` (and
    /// with it everything posted before).
    public func wake(unlessTakenSince mark: Int) {
        let write = state.withLock { s in
            guard s.takes == mark, !s.commands.isEmpty, !s.signalled else { return false }
            s.signalled = true
            return true
        }
        if write { signal.signal() }
    }

    @discardableResult
    private func enqueue(_ commands: [EngineCommand], wake: Bool) -> Int {
        let (mark, write) = state.withLock { s in
            s.commands.append(contentsOf: commands)
            guard wake, !s.signalled else { return (s.takes, false) }
            s.signalled = true
            return (s.takes, true)
        }
        if write { signal.signal() }
        return mark
    }

    /// What waits, for the engine's thread (on a wake-up, after it cleared the signal; and at
    /// the end of each turn, for what was posted). A signal left set costs one empty wake-up.
    func take() -> [EngineCommand] {
        state.withLock { s in
            s.signalled = false
            s.takes &+= 1
            var taken: [EngineCommand] = []
            swap(&taken, &s.commands)
            return taken
        }
    }
}
