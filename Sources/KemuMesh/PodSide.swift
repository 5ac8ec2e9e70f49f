import Glibc
import KemuSystem
import NIOCore

/// The endpoint pod's socket on the destination node: a raw descriptor on the mesh's loop
/// (`MeshLoop`), joined to its stream. It reads while the stream may send; keeps what the socket
/// cannot take yet, and is unwritable (the stream withholds its window) while that is more than
/// `highWater`; an end of input ends the stream's output; the stream's end shuts the socket's
/// output once all is sent; the socket is closed when both ways have ended, or either side
/// failed. Its last close (the FIN's or reset's kernel work) is done off the loop (`chores`).
///
/// Confined to its loop, hence `@unchecked Sendable`.
final class PodSide: GlueSide, MeshWatcher, @unchecked Sendable {
    private var fd: Int32 = -1
    private let loop: MeshLoop
    private let chores: KernelChores
    private var unsent = CircularBuffer<ByteBuffer>()
    private var unsentBytes = 0
    private var isWritable = true
    /// End of input was read.
    private var inputDone = false
    /// The output is shut once what is unsent has gone (`endOutput`); the socket closed
    /// (`closeAfterWrites`).
    private var shutdownDue = false
    private var closeDue = false
    private var closed = false

    static let highWater = 64 << 10
    static let lowWater = 32 << 10
    static let readSize = 16 << 10

    init(loop: MeshLoop, chores: KernelChores) {
        self.loop = loop
        self.chores = chores
    }

    /// Takes the connected socket `fd`; on failure it is closed, and the error returned.
    func attach(_ fd: Int32) -> Int32? {
        self.fd = fd
        do {
            try loop.watch(fd, self)
            return nil
        } catch {
            closed = true
            chores.close(fd)
            return (error as? SystemError)?.errno ?? EIO
        }
    }

    func ready(_ events: UInt32) {
        guard !closed else { return }
        if events & Epoll.writable != 0 { sendUnsent() }
        if !closed, !inputDone, events & (Epoll.readable | Epoll.peerClosed) != 0 { readAll() }
    }

    func loopStopped() { closeNow() }

    /// Reads until the socket has nothing more (edge-triggered), while the stream may send; at
    /// most a few reads at a time (the loop calls again for the rest).
    private func readAll() {
        guard let partner else { return }
        var reads = 0
        var delivered = false
        while !closed, !inputDone {
            guard partner.writable else {
                readPending = true
                break
            }
            if reads == 8 {
                loop.callAgain(self)
                break
            }
            var buffer = ByteBuffer()
            var got = 0
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: Self.readSize) { space in
                guard let base = space.baseAddress else { return 0 }
                got = TCPSocket.receive(fd, into: base, count: Self.readSize)
                return max(0, got)
            }
            if got > 0 {
                reads += 1
                delivered = true
                count(got)
                partner.deliver(buffer)
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
        partner.endOutput()
        if outputEnded && !shutdownDue { closeNow() }
    }

    private func fail() {
        failed = true
        closeNow()
    }

    override func startReading() { loop.callAgain(self) }

    override var writable: Bool { !closed && isWritable }

    /// Read at the loop's next pass (not within the partner's own call).
    override func resumeReading() { loop.callAgain(self) }

    override func deliver(_ bytes: ByteBuffer) {
        guard !closed, !outputEnded, bytes.readableBytes > 0 else { return }
        unsent.append(bytes)
        unsentBytes += bytes.readableBytes
    }

    override func flushOut() { sendUnsent() }

    /// Sends what the socket takes; the rest waits for it to be writable (an edge).
    private func sendUnsent() {
        while !closed, var first = unsent.first {
            let n = first.withUnsafeReadableBytes { bytes in
                guard let base = bytes.baseAddress else { return -Int(EAGAIN) }
                return TCPSocket.send(fd, from: base, count: bytes.count)
            }
            if n == -Int(EAGAIN) { break }
            if n < 0 { return fail() }
            unsentBytes -= n
            first.moveReaderIndex(forwardBy: n)
            if first.readableBytes > 0 {
                unsent[unsent.startIndex] = first
                break
            }
            unsent.removeFirst()
        }
        guard !closed else { return }
        if isWritable, unsentBytes > Self.highWater {
            isWritable = false
        } else if !isWritable, unsentBytes < Self.lowWater {
            isWritable = true
            becameWritable()
        }
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

    /// Closes the socket (off the loop) and ends this side.
    private func closeNow() {
        guard !closed else { return }
        closed = true
        unsent.removeAll()
        if fd >= 0 {
            loop.forget(fd)
            chores.close(fd)
        }
        ended()
    }
}
