import Dispatch
import Synchronization

/// System calls whose kernel work is heavy — a dial to a pod on this node (the kernel runs the
/// whole handshake inside `connect`) — done on a thread of their own, off the loop that every
/// tunnelled byte waits for (dialling on the loop made 9 % fewer connections a second in paired
/// runs). Chores queued while one batch runs go together in the next: one wake-up for many;
/// their answers go to the loop (`MeshLoop.execute`, which takes a batch per pass between its
/// reads and writes: a tunnel's answers go out as each batch's are written, not once a burst's
/// all are).
final class KernelChores: Sendable {
    /// A chore runs off the loop and returns what to do on the loop afterwards, if anything.
    typealias Chore = @Sendable () -> (@Sendable () -> Void)?

    private let queue = DispatchQueue(label: "kemu.mesh.chores")
    private let pending = Mutex<[(loop: MeshLoop, chore: Chore)]>([])

    /// Queues `chore`; what it returns runs on `loop`.
    func run(answeringOn loop: MeshLoop, _ chore: @escaping Chore) {
        let first = pending.withLock { p in
            defer { p.append((loop, chore)) }
            return p.isEmpty
        }
        if first { queue.async { self.drain() } }
    }

    private func drain() {
        let batch = pending.withLock { p in defer { p.removeAll() }; return p }
        for job in batch {
            if let answer = job.chore() { job.loop.execute(answer) }
        }
    }
}
