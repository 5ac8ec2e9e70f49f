import NIOCore

/// The calls on one event loop that wait for their CONNECT's answer, in the order of their
/// deadlines, under one timer. A timer each, scheduled at the call and cancelled at its answer,
/// showed as 2 % of the source node's loop in profiles: a new connection's most common end is
/// its answer, and NIO's cancel looks for the task among all those scheduled. Here an answered
/// call is simply passed over when its deadline comes. An entry holds its carriage weakly: one
/// that ended goes at once, not at its deadline.
///
/// Confined to its loop, hence `@unchecked Sendable`.
final class CallClock: @unchecked Sendable {
    struct Entry {
        var deadline: NIODeadline
        weak var carriage: Carriage?
        /// The wait this entry ends, and how long the call waited before it.
        var interval: TimeAmount
        var waited: TimeAmount
        /// The call's tunnel, and how many reads it had had, when the wait began.
        var mark: (tunnel: ObjectIdentifier, reads: UInt64)?
    }

    private let loop: MeshLoop
    private var entries = CircularBuffer<Entry>()
    /// When the loop's timer is set to fire (an earlier deadline sets another; the later one
    /// then finds nothing to do).
    private var armed: NIODeadline?
    /// What becomes of a call whose deadline came while it still waited.
    private let due: (Entry) -> Void

    init(loop: MeshLoop, due: @escaping (Entry) -> Void) {
        self.loop = loop
        self.due = due
    }

    func wait(_ entry: Entry) {
        // Mostly in order already (most calls have one dial timeout): placed from the back.
        var at = entries.endIndex
        while at > entries.startIndex, entries[entries.index(before: at)].deadline > entry.deadline {
            at = entries.index(before: at)
        }
        // (CircularBuffer's insert copies the whole buffer: only for one out of order.)
        if at == entries.endIndex { entries.append(entry) } else { entries.insert(entry, at: at) }
        arm()
    }

    private func arm() {
        guard let first = entries.first?.deadline else { return }
        if let armed, armed <= first { return }
        armed = first
        loop.after(UInt64(max(0, (first - .now()).nanoseconds))) { [self] in
            guard armed == first else { return }
            armed = nil
            fire()
        }
    }

    private func fire() {
        let now = NIODeadline.now()
        while let first = entries.first, first.deadline <= now {
            entries.removeFirst()
            if first.carriage?.waiting == true { due(first) }
        }
        arm()
    }
}
