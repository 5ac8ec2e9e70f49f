import Glibc
import KemuIP

/// Non-blocking UDP sockets for an event loop (the node proxy's UDP Services): calls that report
/// EAGAIN and the ICMP errors a connected socket learns (ECONNREFUSED: nobody listens at the
/// endpoint) as values, never as thrown errors. Every descriptor is close-on-exec.
public enum DatagramSocket {
    /// A socket bound to `address` (free-bind: the address may become local later; reuse-port:
    /// a restarted proxy may bind beside one still stopping).
    public static func listen(on address: SocketAddress) throws -> Int32 {
        let fd = try syscall("socket", "udp \(address)") {
            socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        }
        TCPSocket.setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1)
        TCPSocket.setOption(fd, SOL_SOCKET, SO_REUSEPORT, 1)
        TCPSocket.setOption(fd, Int32(IPPROTO_IP), IP_FREEBIND, 1)
        var a = address.sockaddr
        let bound = withUnsafePointer(to: &a) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if bound != 0 {
            let err = errno
            close(fd)
            throw SystemError("bind", "udp \(address)", errno: err)
        }
        return fd
    }

    /// A socket connected to `endpoint`: from `source` (address and port, transparently: see
    /// `TCPSocket.bindTransparent`) when given, else from an address and port the kernel picks.
    /// Returns the descriptor, or -errno.
    public static func connect(to endpoint: SocketAddress, from source: SocketAddress?) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        if fd < 0 { return -errno }
        if let source {
            // Two Services' flows from one client socket bind the same address: each socket is
            // connected, so replies still find the right one.
            TCPSocket.setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1)
            let err = TCPSocket.bindTransparent(fd, source)
            if err != 0 { close(fd); return -err }
        }
        var a = endpoint.sockaddr
        let result = withUnsafePointer(to: &a) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if result != 0 {
            let err = errno
            close(fd)
            return -err
        }
        return fd
    }

    /// One datagram into `buffer` and its sender: the length (0 is a datagram too), or -errno
    /// (-EAGAIN: none waiting). A datagram longer than `count` is cut to it.
    @inline(__always)
    public static func receive(_ fd: Int32, into buffer: UnsafeMutableRawPointer, count: Int) -> (Int, SocketAddress) {
        var peer = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        while true {
            let n = withUnsafeMutablePointer(to: &peer) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, buffer, count, Int32(MSG_DONTWAIT), $0, &length) }
            }
            if n >= 0 { return (n, SocketAddress(peer)) }
            let err = errno
            if err != EINTR { return (-Int(err), SocketAddress(IPv4Address(0), 0)) }
        }
    }

    /// Sends one datagram on a connected socket (nil `to`) or to `peer`: the count, or -errno.
    @inline(__always)
    public static func send(_ fd: Int32, from buffer: UnsafeRawPointer, count: Int, to peer: SocketAddress? = nil) -> Int {
        while true {
            let n: Int
            if let peer {
                var a = peer.sockaddr
                n = withUnsafePointer(to: &a) { p in
                    p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(fd, buffer, count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL), $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
            } else {
                n = Glibc.send(fd, buffer, count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
            }
            if n >= 0 { return n }
            let err = errno
            if err != EINTR { return -Int(err) }
        }
    }
}
