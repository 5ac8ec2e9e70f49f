import Glibc

// Sockets, and the server: its listeners, its connections, one poll loop.

func listenTCP(_ address: String, _ port: Int) -> Int32 {
    let fd = bound(Int32(SOCK_STREAM.rawValue), address, port)
    guard listen(fd, 1024) == 0 else {
        put("kemu-echo: cannot listen on \(address):\(port): \(String(cString: strerror(errno)))\n")
        exit(1)
    }
    return fd
}

/// A non-blocking socket of `type` bound to address:port.
func bound(_ type: Int32, _ address: String, _ port: Int) -> Int32 {
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    guard inet_pton(AF_INET, address, &addr.sin_addr) == 1 else { fail("--address \(address) is not an IPv4 address") }
    let fd = socket(AF_INET, type | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { put("kemu-echo: socket: \(String(cString: strerror(errno)))\n"); exit(1) }
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    let ok = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard ok == 0 else {
        put("kemu-echo: cannot bind \(address):\(port): \(String(cString: strerror(errno)))\n")
        exit(1)
    }
    return fd
}

/// "ip:port" of a socket address.
func name(_ addr: sockaddr_in) -> String {
    var a = addr.sin_addr
    var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
    inet_ntop(AF_INET, &a, &text, socklen_t(text.count))
    return "\(string(text)):\(UInt16(bigEndian: addr.sin_port))"
}

/// "ip:port" of the peer.
func peerName(_ fd: Int32) -> String {
    var addr = sockaddr_in(), length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) }
    }
    return ok == 0 ? name(addr) : ""
}

final class Connection {
    let fd: Int32
    let http: Bool
    let client: String
    var input: [UInt8] = []
    var output: [UInt8] = []
    var sent = 0
    var closing = false

    init(fd: Int32, http: Bool) {
        self.fd = fd
        self.http = http
        client = http ? peerName(fd) : ""
    }

    var pending: Int { output.count - sent }
}

/// The server: its listeners, its connections, one poll loop.
final class EchoServer {
    let settings: Settings
    let started = monotonic()
    let identity = Identity()
    let httpListener: Int32
    let echoListener: Int32?
    let datagrams: Int32?
    var connections: [Int32: Connection] = [:]
    let maxConnections = 4096
    var chunk = [UInt8](repeating: 0, count: 64 * 1024)

    init(_ settings: Settings) {
        self.settings = settings
        if let journal = settings.journal {
            let fd = open(journal, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            if fd < 0 {
                var cwd = [CChar](repeating: 0, count: 4096)
                let here = getcwd(&cwd, cwd.count) != nil ? string(cwd) : "."
                put("Error: --journal \(journal): cannot open it for writing in \(here)\n")
                exit(1)
            }
            let line = Array("\(identity.pod) started \(iso8601(time(nil)))\n".utf8)
            _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            close(fd)
        }
        httpListener = listenTCP(settings.address, settings.port)
        echoListener = settings.tcpPort == 0 ? nil : listenTCP(settings.address, settings.tcpPort)
        datagrams = settings.udpPort == 0 ? nil : bound(Int32(SOCK_DGRAM.rawValue), settings.address, settings.udpPort)
    }

    /// Every datagram waiting, answered: echoed, or "?…" with who answered whom.
    func answerDatagrams(_ fd: Int32) {
        for _ in 0..<64 {
            var peer = sockaddr_in(), length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let n = chunk.withUnsafeMutableBytes { b in
                withUnsafeMutablePointer(to: &peer) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, b.baseAddress, b.count, 0, $0, &length) } }
            }
            if n < 0 { return }
            var reply = Array(chunk[..<n])
            if reply.first == UInt8(ascii: "?") {
                reply = Array("pod=\(identity.pod) ip=\(identity.podIP) node=\(identity.node) client=\(name(peer))\n".utf8)
            }
            _ = reply.withUnsafeBytes { b in
                withUnsafePointer(to: &peer) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, b.baseAddress, b.count, 0, $0, length) } }
            }
        }
    }

    func handle(_ request: Request, on connection: Connection) -> [UInt8] {
        let keepAlive = request.keepAlive
        let age = monotonic() - started
        let text = "text/plain; charset=utf-8"
        if request.method == "GET" {
            switch request.path {
            case "/healthz":
                let failing = settings.failAfter > 0 && age >= settings.failAfter
                return response(failing ? 500 : 200, text, failing ? "failing (--fail-after)\n" : "ok\n", keepAlive: keepAlive)
            case "/readyz":
                let ready = age >= settings.readyAfter
                return response(ready ? 200 : 503, text, ready ? "ready\n" : "not ready yet (--ready-after)\n", keepAlive: keepAlive)
            case "/journal" where settings.journal != nil:
                return response(200, text, readFile(settings.journal ?? ""), keepAlive: keepAlive)
            default: break
            }
        }
        guard request.method == "GET" || request.method == "POST" else { return response(404, text, "Not Found\n", keepAlive: keepAlive) }
        return identity.answer(request, client: connection.client, keepAlive: keepAlive)
    }

    func readFile(_ path: String) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        var bytes: [UInt8] = []
        while bytes.count < maxBody {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            bytes += chunk[..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    func accept(from listener: Int32, http: Bool) {
        while true {
            let fd = Glibc.accept(listener, nil, nil)
            if fd < 0 { return }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            if connections.count >= maxConnections { close(fd); continue }
            connections[fd] = Connection(fd: fd, http: http)
        }
    }

    /// Reads what is there; answers every whole request (HTTP) or queues the bytes back (echo).
    func readable(_ c: Connection) {
        while !c.closing {
            // Echo: stop reading while the peer does not take what it sent (poll waits for POLLOUT).
            if !c.http && c.pending > 4 * chunk.count { return }
            let n = chunk.withUnsafeMutableBytes { recv(c.fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { c.closing = true; return }
            if n < 0 {
                if errno != EAGAIN && errno != EINTR { c.closing = true; c.output = []; c.sent = 0 }
                return
            }
            if !c.http { c.output += chunk[..<n]; continue }
            c.input += chunk[..<n]
            answering: while !c.closing {
                switch parseRequest(c.input) {
                case .incomplete: break answering
                case .bad(let status, let reason):
                    c.output += response(status, "text/plain; charset=utf-8", "\(reason)\n", keepAlive: false)
                    c.closing = true
                    c.input = []
                    // Read past what the client has sent already (up to 1 MiB): closing with
                    // bytes unread resets the connection, and the client would lose the answer.
                    var drained = 0
                    while drained < 1 << 20 {
                        let n = chunk.withUnsafeMutableBytes { recv(c.fd, $0.baseAddress, $0.count, 0) }
                        if n <= 0 { break }
                        drained += n
                    }
                case .request(let request, let consumed):
                    c.input.removeFirst(consumed)
                    c.output += handle(request, on: c)
                    if !request.keepAlive { c.closing = true }
                }
            }
        }
    }

    /// Sends what is queued; false once the connection is done with.
    func flush(_ c: Connection) -> Bool {
        while c.pending > 0 {
            let n = c.output.withUnsafeBytes { bytes -> Int in
                guard let base = bytes.baseAddress else { return 0 }
                return send(c.fd, base + c.sent, c.pending, Int32(MSG_NOSIGNAL))
            }
            if n < 0 { return errno == EAGAIN || errno == EINTR }
            if n == 0 { return false }
            c.sent += n
        }
        c.output.removeAll(keepingCapacity: true)
        c.sent = 0
        return !c.closing
    }

    func run() -> Never {
        var fds: [pollfd] = []
        while true {
            fds.removeAll(keepingCapacity: true)
            fds.append(pollfd(fd: httpListener, events: Int16(POLLIN), revents: 0))
            if let echoListener { fds.append(pollfd(fd: echoListener, events: Int16(POLLIN), revents: 0)) }
            if let datagrams { fds.append(pollfd(fd: datagrams, events: Int16(POLLIN), revents: 0)) }
            for c in connections.values {
                fds.append(pollfd(fd: c.fd, events: Int16(POLLIN) | (c.pending > 0 ? Int16(POLLOUT) : 0), revents: 0))
            }
            var timeout: Int32 = -1
            if settings.exitAfter > 0 { timeout = Int32(max(0, min(3_600_000, ((started + settings.exitAfter - monotonic()) * 1000).rounded(.up)))) }
            let ready = poll(&fds, nfds_t(fds.count), timeout)
            if settings.exitAfter > 0 && monotonic() - started >= settings.exitAfter {
                put("kemu echo: exiting after \(settings.exitAfter) s (--exit-after)\n")
                exit(1)
            }
            if ready <= 0 { continue }
            for entry in fds where entry.revents != 0 {
                if entry.fd == httpListener { accept(from: httpListener, http: true); continue }
                if entry.fd == echoListener { accept(from: entry.fd, http: false); continue }
                if entry.fd == datagrams { answerDatagrams(entry.fd); continue }
                guard let c = connections[entry.fd] else { continue }
                if entry.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 { readable(c) }
                if !flush(c) || (c.closing && c.pending == 0) {
                    close(c.fd)
                    connections[c.fd] = nil
                }
            }
        }
    }
}
