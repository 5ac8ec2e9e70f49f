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

    /// Whether a read that got `got` of the `asked` bytes left the socket empty, so that the
    /// next read would only meet EAGAIN: a stream socket's read stops short only when it has
    /// taken all there was, and edge-triggered epoll reports whatever arrives after it. The end
    /// of input is the exception: once the peer's end has been reported, reads go on until they
    /// meet it (its report may have come with the bytes this read took).
    @inline(__always)
    static func drained(_ got: Int, of asked: Int, peerClosing: Bool) -> Bool {
        got < asked && !peerClosing
    }

    /// One read of `fd` into a new buffer of `size` bytes: the buffer, and what recv(2) returned
    /// (the count, 0 at the end, -errno). The next read's size doubles after one that filled the
    /// buffer, up to `limit`, and halves after one that used under a quarter.
    static func read(_ fd: Int32, size: inout Int, max limit: Int) -> (ByteBuffer, Int) {
        var buffer = ByteBuffer()
        var got = 0
        let asked = size
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: asked) { space in
            guard let base = space.baseAddress else { return 0 }
            got = TCPSocket.receive(fd, into: base, count: asked)
            return max(0, got)
        }
        if got == asked {
            size = min(asked * 2, limit)
        } else if got < asked / 4 {
            size = max(asked / 2, 2 << 10)
        }
        return (buffer, got)
    }
}
