import Glibc
import KemuSystem
import NIOCore

/// A tunnelled connection's socket — the endpoint pod's on the destination node, the client's
/// the engine handed over on the source — as a raw descriptor on the mesh's loop (`MeshLoop`),
/// joined to its stream. It reads while the stream may send; keeps what the socket cannot take
/// yet, and is unwritable (the stream withholds its window) while that is more than
/// `Unsent.highWater`; an end of input ends the stream's output; the stream's end shuts the socket's
/// output once all is sent; the socket is closed when both ways have ended, or either side
/// failed. Its close is done on the loop: handing it to another thread (`KernelChores`, as
/// before) cost both nodes more than the close itself (paired runs: 15-25 µs less CPU per
/// connection on each node, 12-15 % more connections a second, closing here).
/// On the source, its carriage may park what the client sends until the CONNECT's answer
/// (`Carriage.admit`), and take the socket back for another endpoint (`release`).
///
/// Confined to its loop, hence `@unchecked Sendable`.
final class SocketSide: GlueSide, MeshWatcher, @unchecked Sendable {
    private var fd: Int32 = -1
    private let loop: MeshLoop
    private var unsent = Unsent()
    /// End of input was read.
    private var inputDone = false
    /// The output is shut once what is unsent has gone (`endOutput`); the socket closed
    /// (`closeAfterWrites`).
    private var shutdownDue = false
    private var closeDue = false
    private var closed = false

    /// A request or a small answer takes one small buffer, a bulk flow a few large ones.
    private var reads = SocketReads(size: 2 << 10)

    init(loop: MeshLoop) {
        self.loop = loop
    }

    /// Takes the connected socket `fd`; on failure it is closed, and the error returned.
    func attach(_ fd: Int32) -> Int32? {
        self.fd = fd
        do {
            try loop.watch(fd, self)
            return nil
        } catch {
            closed = true
            Glibc.close(fd)
            return (error as? SystemError)?.errno ?? EIO
        }
    }

    func ready(_ events: UInt32) {
        guard !closed else { return }
        if events & Epoll.writable != 0 { sendUnsent() }
        reads.saw(events)
        if !closed, !inputDone, events & (Epoll.readable | Epoll.peerClosed) != 0 { readAll() }
    }

    func loopStopped() { closeNow() }

    /// Reads until the socket has nothing more (edge-triggered; `SocketReads` tells when), while
    /// the stream may send; at most a few reads at a time (the loop calls again for the rest).
    private func readAll() {
        guard let partner else { return }
        var done = 0
        var delivered = false
        while !closed, !inputDone {
            guard partner.writable, carriage?.parked == nil else {
                readPending = true  // until the stream may send, or the answer comes
                break
            }
            if done == 8 {
                loop.callAgain(self)
                break
            }
            let (buffer, got, drained) = reads.next(fd)
            if got > 0 {
                done += 1
                if let carriage, !carriage.admit(buffer) { continue }  // parked (the loop's guard stops)
                delivered = true
                count(got)
                partner.deliver(buffer)
                if drained { break }
            } else if got == 0 {
                inputEnded(partner, delivered: delivered)
                return
            } else {
                if got != -Int(EAGAIN) { fail() }
                break
            }
        }
        if delivered { partner.flushOut() }
    }

    /// The pod ended its output: so does the stream (with what this read gave it, in one frame);
    /// if this side's output was ended too, the socket is done.
    private func inputEnded(_ partner: GlueSide, delivered: Bool) {
        inputDone = true
        if delivered { partner.flushOut() }
        // Behind parked bytes, the end waits for the answer (the carriage passes it on).
        if carriage?.admitEnd() ?? true { partner.endOutput() }
        if outputEnded && !shutdownDue { closeNow() }
    }

    private func fail() {
        failed = true
        closeNow()
    }

    /// Watched since before the join: what came meanwhile is reported at the loop's next pass
    /// (edge-triggered epoll reports a descriptor ready at its registration).
    override func startReading() {}

    override var writable: Bool { !closed && unsent.writable }

    /// Read at the loop's next pass (not within the partner's own call).
    override func resumeReading() { loop.callAgain(self) }

    override func deliver(_ bytes: ByteBuffer) {
        guard !closed, !outputEnded, bytes.readableBytes > 0 else { return }
        unsent.append(bytes)
    }

    override func flushOut() { sendUnsent() }

    /// Sends what the socket takes; the rest waits for it to be writable (an edge).
    private func sendUnsent() {
        guard !closed else { return }
        let wasWritable = unsent.writable
        if unsent.send(to: fd) != 0 { return fail() }
        if !wasWritable && unsent.writable { becameWritable() }
        guard unsent.isEmpty else { return }
        if closeDue {
            closeNow()
        } else if shutdownDue {
            shutdownDue = false
            TCPSocket.shutdownWrite(fd)
            if inputDone { closeNow() }
        }
    }

    /// Corks the socket: what is written next waits for the shutdown, and leaves with the FIN
    /// in one segment.
    override func holdForEnd() {
        guard !closed else { return }
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_CORK, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    override func endOutput() {
        guard !closed, !outputEnded else { return }
        outputEnded = true
        shutdownDue = true
        sendUnsent()
    }

    override func closeAfterWrites() {
        guard !closed else { return }
        closeDue = true
        sendUnsent()
    }

    /// The socket goes back to the engine (for another endpoint): no longer watched, not closed,
    /// and this side ends without a word to its partner. Returns the descriptor.
    func release() -> Int32 {
        closed = true
        partner = nil
        unsent.removeAll()
        loop.forget(fd)
        return fd
    }

    /// Ends it with a reset.
    func abort() {
        guard !closed else { return }
        TCPSocket.setResetOnClose(fd)
        closeNow()
    }

    /// Closes the socket and ends this side.
    private func closeNow() {
        guard !closed else { return }
        closed = true
        unsent.removeAll()
        if fd >= 0 {
            loop.forget(fd)
            Glibc.close(fd)
        }
        ended()
    }
}
