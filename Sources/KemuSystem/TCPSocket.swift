import CKemuShim
import Glibc
import KemuIP

/// An IPv4 address and TCP port.
public struct SocketAddress: Hashable, Sendable, CustomStringConvertible {
    public var ip: IPv4Address
    public var port: UInt16

    public init(_ ip: IPv4Address, _ port: UInt16) {
        self.ip = ip
        self.port = port
    }

    public var description: String { "\(ip):\(port)" }

    /// `IP:PORT`, such as `10.96.0.10:53`; nil for anything else.
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let ip = IPv4Address(parts[0]), let port = UInt16(parts[1]) else { return nil }
        self.init(ip, port)
    }

    var sockaddr: sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = in_port_t(port.bigEndian)
        a.sin_addr.s_addr = ip.value.bigEndian
        return a
    }

    init(_ a: sockaddr_in) {
        ip = IPv4Address(UInt32(bigEndian: a.sin_addr.s_addr))
        port = UInt16(bigEndian: a.sin_port)
    }
}

/// Non-blocking TCP sockets for an event loop: calls that report `EAGAIN` and friends as values
/// (the normal case on a hot path), not as thrown errors. Every descriptor is close-on-exec.
public enum TCPSocket {
    /// A listening socket on `address` in the calling thread's namespace. `freeBind` lets it bind
    /// an address that is not (yet) on any link; `reusePort` lets a second process (a restarted
    /// proxy) bind the same address while the first still holds it.
    /// With `transparent`, a TPROXY listener: it takes connections to any address the
    /// namespace's TPROXY rules send it (each accepted socket's own address is the one dialled).
    public static func listen(on address: SocketAddress, backlog: Int32 = 4096, freeBind: Bool = true, reusePort: Bool = false,
                              transparent: Bool = false) throws -> Int32 {
        let fd = try syscall("socket", "tcp \(address)") {
            socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        }
        do {
            setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1)
            if reusePort { setOption(fd, SOL_SOCKET, SO_REUSEPORT, 1) }
            if freeBind { setOption(fd, Int32(IPPROTO_IP), IP_FREEBIND, 1) }
            if transparent {
                _ = try syscall("setsockopt IP_TRANSPARENT", "tcp \(address)") { setsockopt(fd, Int32(IPPROTO_IP), Int32(IP_TRANSPARENT), [Int32(1)], 4) }
            }
            var a = address.sockaddr
            _ = try withUnsafePointer(to: &a) { p in
                try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                    try syscall("bind", "tcp \(address)") { bind(fd, sa, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                }
            }
            _ = try syscall("listen", "tcp \(address)") { Glibc.listen(fd, backlog) }
            return fd
        } catch {
            close(fd)
            throw error
        }
    }

    public enum Accepted {
        case connection(Int32, SocketAddress)
        /// Nothing left in the backlog.
        case none
        /// An errno other than EAGAIN (EMFILE, ENFILE, ENOBUFS, …): stop accepting for now.
        case failed(Int32)
    }

    /// accept4(2), non-blocking and close-on-exec.
    @inline(__always)
    public static func accept(_ listener: Int32) -> Accepted {
        var peer = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        while true {
            let fd = withUnsafeMutablePointer(to: &peer) { kemu_accept_nonblock(listener, $0, &length) }
            if fd >= 0 { return .connection(fd, SocketAddress(peer)) }
            switch errno {
            case EINTR, ECONNABORTED: continue
            case EAGAIN: return .none
            case let err: return .failed(err)
            }
        }
    }

    /// Starts a non-blocking connect. Returns the descriptor and 0 (connected) or EINPROGRESS;
    /// or -1 and the errno (ENETUNREACH, EMFILE, …). With `source`, the connection comes from
    /// that address even when it is not this host's (a transparent dial: see `bindTransparent`).
    @inline(__always)
    public static func connect(to address: SocketAddress, from source: IPv4Address? = nil) -> (fd: Int32, errno: Int32) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        if fd < 0 { return (-1, errno) }
        setNoDelay(fd)
        if let source {
            // The port is chosen at connect, per destination (IP_BIND_ADDRESS_NO_PORT), so one
            // client address can have as many dials as a host has ports per endpoint.
            setOption(fd, Int32(IPPROTO_IP), Int32(IP_BIND_ADDRESS_NO_PORT), 1)
            let err = bindTransparent(fd, SocketAddress(source, 0))
            if err != 0 { close(fd); return (-1, err) }
        }
        var a = address.sockaddr
        let result = withUnsafePointer(to: &a) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if result == 0 { return (fd, 0) }
        let err = errno
        if err == EINPROGRESS || err == EINTR { return (fd, EINPROGRESS) }
        close(fd)
        return (-1, err)
    }

    /// Binds `fd` to `address` with IP_TRANSPARENT: the socket may then use an address that is
    /// not this host's (the client's, for a dial on its behalf). Replies to it reach the socket
    /// only where the namespace routes them here (the node's socket-match rule and policy route).
    /// Returns 0 or the errno (EPERM without CAP_NET_ADMIN).
    public static func bindTransparent(_ fd: Int32, _ address: SocketAddress) -> Int32 {
        var one: Int32 = 1
        if setsockopt(fd, Int32(IPPROTO_IP), Int32(IP_TRANSPARENT), &one, socklen_t(MemoryLayout<Int32>.size)) != 0 { return errno }
        var a = address.sockaddr
        let bound = withUnsafePointer(to: &a) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        return bound == 0 ? 0 : errno
    }

    /// SO_ERROR: 0 once a non-blocking connect succeeded, else why it failed.
    @inline(__always)
    public static func pendingError(_ fd: Int32) -> Int32 {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(fd, SOL_SOCKET, SO_ERROR, &value, &length) != 0 { return errno }
        return value
    }

    @inline(__always)
    public static func setNoDelay(_ fd: Int32) { setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1) }

    /// Closes with a reset (SO_LINGER 0): the peer sees ECONNRESET at once, not an orderly end.
    public static func abort(_ fd: Int32) {
        setResetOnClose(fd)
        close(fd)
    }

    /// SO_LINGER 0: the close that follows sends a reset.
    public static func setResetOnClose(_ fd: Int32) {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
    }

    /// recv(2) into `buffer`: the count, 0 at end of stream, or -errno (-EAGAIN: nothing now).
    @inline(__always)
    public static func receive(_ fd: Int32, into buffer: UnsafeMutableRawPointer, count: Int) -> Int {
        while true {
            let n = recv(fd, buffer, count, Int32(MSG_DONTWAIT))
            if n >= 0 { return n }
            let err = errno
            if err != EINTR { return -Int(err) }
        }
    }

    /// send(2) without SIGPIPE: the count written (maybe short), or -errno (-EAGAIN: full).
    @inline(__always)
    public static func send(_ fd: Int32, from buffer: UnsafeRawPointer, count: Int) -> Int {
        while true {
            let n = Glibc.send(fd, buffer, count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
            if n >= 0 { return n }
            let err = errno
            if err != EINTR { return -Int(err) }
        }
    }

    /// The half-close: the peer reads end-of-stream, and may still send.
    @inline(__always)
    public static func shutdownWrite(_ fd: Int32) { _ = shutdown(fd, Int32(SHUT_WR)) }

    /// The address a socket is bound to.
    public static func localAddress(_ fd: Int32) -> SocketAddress? {
        var a = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &a) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return ok == 0 ? SocketAddress(a) : nil
    }

    @inline(__always)
    static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) {
        var v = value
        _ = setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size))
    }
}

/// A pipe between two sockets for splice(2): bytes move socket → pipe → socket inside the
/// kernel, never copied through the process.
public struct SplicePipe: Sendable {
    public let readEnd: Int32
    public let writeEnd: Int32

    /// A non-blocking pipe of about `size` bytes (the kernel rounds up to pages; at most
    /// /proc/sys/fs/pipe-max-size).
    public init(size: Int32) throws {
        var fds: [Int32] = [-1, -1]
        _ = try syscall("pipe2") { kemu_pipe_nonblock(&fds, size) }
        readEnd = fds[0]
        writeEnd = fds[1]
    }

    public func close() {
        Glibc.close(readEnd)
        Glibc.close(writeEnd)
    }

    /// Moves up to `length` bytes. Returns the count, 0 at end of stream, or -errno
    /// (-EAGAIN: nothing to move now).
    @inline(__always)
    public static func move(from: Int32, to: Int32, length: Int) -> Int {
        while true {
            let n = kemu_splice(from, to, UInt(length))
            if n >= 0 { return n }
            let err = errno
            if err != EINTR { return -Int(err) }
        }
    }
}

/// Datagram sockets (the cluster DNS responder's), blocking, for a thread of their own.
public enum UDPSocket {
    /// Where a datagram came from, to answer it.
    public struct Peer: Sendable {
        var address: sockaddr_in
    }

    /// A socket bound to `address`; free-bind, so the address may become local later.
    public static func bind(_ address: SocketAddress) throws -> Int32 {
        let fd = try syscall("socket", "udp \(address)") { socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        TCPSocket.setOption(fd, Int32(IPPROTO_IP), IP_FREEBIND, 1)
        var a = address.sockaddr
        do {
            _ = try withUnsafePointer(to: &a) { p in
                try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                    try syscall("bind", "udp \(address)") { Glibc.bind(fd, sa, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                }
            }
        } catch {
            Glibc.close(fd)
            throw error
        }
        return fd
    }

    /// Waits for a datagram; nil once the socket is shut down.
    public static func receive(_ fd: Int32, into buffer: inout [UInt8]) -> (Int, Peer)? {
        var peer = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        while true {
            let n = buffer.withUnsafeMutableBytes { b in
                withUnsafeMutablePointer(to: &peer) { p in
                    p.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, b.baseAddress, b.count, 0, $0, &length) }
                }
            }
            if n >= 0 { return (n, Peer(address: peer)) }
            if errno != EINTR { return nil }
        }
    }

    public static func send(_ fd: Int32, _ bytes: [UInt8], to peer: Peer) {
        var address = peer.address
        _ = bytes.withUnsafeBytes { b in
            withUnsafePointer(to: &address) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, b.baseAddress, b.count, Int32(MSG_NOSIGNAL), $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
    }

    /// Wakes a thread blocked in `receive` (it returns nil) and closes the socket.
    public static func close(_ fd: Int32) {
        shutdown(fd, Int32(SHUT_RDWR))
        Glibc.close(fd)
    }
}
