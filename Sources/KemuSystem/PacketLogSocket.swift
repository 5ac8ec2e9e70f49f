import CKemuShim
import Glibc

/// The receiving end of nftables' `log group N` (nfnetlink_log), in the calling process's
/// namespace: blocking reads of the kernel's messages, for a thread of its own.
public final class PacketLogSocket: Sendable {
    let fd: Int32

    /// Bound to `group`, each packet cut to `copyBytes` (headers are enough).
    public init(group: UInt16, copyBytes: UInt32 = 128) throws {
        fd = try syscall("nflog bind", "group \(group)") { kemu_nflog_open(group, copyBytes) }
    }

    /// The next datagram of messages; nil once the socket is closed or failed for good.
    public func receive() -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 { return Array(buffer[..<n]) }
            // ENOBUFS: the kernel dropped messages while we were slow; go on with the next.
            if n < 0 && (errno == EINTR || errno == ENOBUFS) { continue }
            return nil
        }
    }

    /// Wakes a thread blocked in `receive` (it returns nil) and closes the socket.
    public func close() {
        shutdown(fd, Int32(SHUT_RDWR))
        Glibc.close(fd)
    }
}
