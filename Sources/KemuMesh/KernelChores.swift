import Dispatch
import Glibc
import Synchronization

/// System calls whose kernel work is heavy and needs no answer at once — a dial to a pod on this
/// node (the kernel runs the whole handshake inside `connect`) and a socket's last close (its
/// FIN or reset) — done on a thread of their own, off the loop that every tunnelled byte waits
/// for. Chores queued while one batch runs go together in the next: one wake-up for many; their
/// answers go to the loop (`MeshLoop.execute`, which takes a batch per pass between its reads and
/// writes: a tunnel's answers go out as each batch's are written, not once a burst's all are).
final class KernelChores: Sendable {
    /// A chore runs off the loop and returns what to do on the loop afterwards, if anything.
    typealias Chore = @Sendable () -> (@Sendable () -> Void)?

    private let queue = DispatchQueue(label: "kemu.mesh.chores")
    private let pending = Mutex<[(loop: MeshLoop?, chore: Chore)]>([])

    /// Queues `chore`; what it returns runs on `loop`.
    func run(answeringOn loop: MeshLoop?, _ chore: @escaping Chore) {
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
        for job in batch {
            guard let answer = job.chore(), let loop = job.loop else { continue }
            loop.execute(answer)
        }
    }
}
