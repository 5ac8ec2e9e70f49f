import Glibc
import KemuSystem
import NIOCore

/// What a raw socket on the mesh's loop (`SocketSide`, `TunnelSocket`) was given to send and has
/// not taken yet, oldest first, and whether that is little enough to take more: unwritable past
/// `highWater` (at the write, as a NIO channel is), writable again below `lowWater` (NIO's own
/// default marks).
struct Unsent {
    private var buffers = CircularBuffer<ByteBuffer>()
    private(set) var bytes = 0
    private(set) var writable = true

    static let highWater = 64 << 10
    static let lowWater = 32 << 10

    var isEmpty: Bool { buffers.isEmpty }

    mutating func append(_ buffer: ByteBuffer) {
        guard buffer.readableBytes > 0 else { return }
        buffers.append(buffer)
        bytes += buffer.readableBytes
        if bytes > Self.highWater { writable = false }
    }

    mutating func removeAll() {
        buffers.removeAll()
        bytes = 0
    }

    /// Sends what `fd` takes now. Returns the errno of a failed send (not EAGAIN: the rest waits
    /// for the socket to be writable), else 0.
    mutating func send(to fd: Int32) -> Int32 {
        while var first = buffers.first {
            let n = first.withUnsafeReadableBytes { bytes in
                guard let base = bytes.baseAddress else { return -Int(EAGAIN) }
                return TCPSocket.send(fd, from: base, count: bytes.count)
            }
            if n == -Int(EAGAIN) { break }
            if n < 0 { return Int32(truncatingIfNeeded: -n) }
            bytes -= n
            first.moveReaderIndex(forwardBy: n)
            if first.readableBytes > 0 {
                buffers[buffers.startIndex] = first
                break
            }
            buffers.removeFirst()
        }
        if bytes > Self.highWater {
            writable = false
        } else if bytes < Self.lowWater {
            writable = true
        }
        return 0
    }
}

/// How a raw socket on the mesh's loop reads (`SocketSide`, `TunnelSocket`): into a new buffer
/// each time, of a size that follows the flow (doubled after a read that filled it, up to `max`;
/// halved after one that used under a quarter), and whether a read left the socket empty.
struct SocketReads {
    private var size: Int
    private let max: Int
    /// The peer's end (or an error) was reported: reads go on until they meet it.
    private var peerClosing = false

    init(size: Int, max: Int = 64 << 10) {
        self.size = size
        self.max = max
    }

    /// Notes what epoll reported of the socket.
    mutating func saw(_ events: UInt32) {
        if events & Epoll.peerClosed != 0 { peerClosing = true }
    }

    /// One read of `fd`: the buffer, what recv(2) returned (the count, 0 at the end, -errno), and
    /// whether the socket is drained, so that another read would only meet EAGAIN: a stream
    /// socket's read stops short only when it took all there was, and edge-triggered epoll
    /// reports whatever arrives after it. Not once the peer's end was reported: reads go on until
    /// they meet it (its report may have come with the bytes this read took).
    mutating func next(_ fd: Int32) -> (buffer: ByteBuffer, got: Int, drained: Bool) {
        var buffer = ByteBuffer()
        var got = 0
        let asked = size
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: asked) { space in
            guard let base = space.baseAddress else { return 0 }
            got = TCPSocket.receive(fd, into: base, count: asked)
            return Swift.max(0, got)
        }
        if got == asked {
            size = Swift.min(asked * 2, max)
        } else if got < asked / 4 {
            size = Swift.max(asked / 2, 2 << 10)
        }
        return (buffer, got, got > 0 && got < asked && !peerClosing)
    }
}
