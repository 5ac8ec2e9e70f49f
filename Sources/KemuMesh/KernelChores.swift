import Dispatch
import Glibc
import NIOCore
import Synchronization

/// System calls whose kernel work is heavy and needs no answer at once — a dial to a pod on this
/// node (the kernel runs the whole handshake inside `connect`) and a socket's last close (its
/// FIN or reset) — done on a thread of their own, off the event loop that every tunnelled byte
/// waits for. Chores queued while one batch runs go together in the next: one wake-up for many,
/// and one for the event loop with all their answers.
final class KernelChores: Sendable {
    /// A chore runs off the loop and returns what to do on `loop` afterwards, if anything.
    typealias Chore = @Sendable () -> (@Sendable () -> Void)?

    private let queue = DispatchQueue(label: "kemu.mesh.chores")
    private let pending = Mutex<[(loop: (any EventLoop)?, chore: Chore)]>([])

    /// Queues `chore`; what it returns runs on `loop`.
    func run(answeringOn loop: (any EventLoop)?, _ chore: @escaping Chore) {
        let first = pending.withLock { p in
            defer { p.append((loop, chore)) }
            return p.isEmpty
        }
        if first { queue.async { self.drain() } }
    }

    /// Closes a descriptor.
    func close(_ fd: Int32) {
        run(answeringOn: nil) {
            _ = Glibc.close(fd)
            return nil
        }
    }

    private func drain() {
        let batch = pending.withLock { p in defer { p.removeAll() }; return p }
        let answers = batch.compactMap { job in job.chore().flatMap { answer in job.loop.map { (loop: $0, answer: answer) } } }
        // One task per loop for the whole batch (in practice the mesh has one loop).
        for mine in Dictionary(grouping: answers, by: { ObjectIdentifier($0.loop) }).values {
            mine[0].loop.execute { for (_, answer) in mine { answer() } }
        }
    }
}
