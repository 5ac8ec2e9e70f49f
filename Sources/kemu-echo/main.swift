// kemu-echo: the program behind the image kemu/echo, kept small on purpose. A cluster runs
// hundreds of these; as `kemu echo` (kemu's own 120 MB binary, its whole command tree and SwiftNIO)
// each start cost the machine the binary's relocations and conformance scans and ~3 MB of private
// memory. This one uses nothing but the C library: one thread, poll(2), an HTTP/1.1 server that
// says who answered and what it was asked, and a raw TCP port that echoes bytes back.
//
// Everything it reads comes from outside (arguments, sockets): no trapping conversion, every
// length checked, every buffer bounded.
import Glibc

struct Settings {
    var port = 8080
    var tcpPort = 9000
    var address = "0.0.0.0"
    var readyAfter = 0.0
    var failAfter = 0.0
    var exitAfter = 0.0
    var journal: String?
}

let usage = """
    USAGE: kemu-echo [--port <port>] [--tcp-port <tcp-port>] [--address <address>] [--ready-after <seconds>]
                     [--fail-after <seconds>] [--exit-after <seconds>] [--journal <file>]

    The echo server of kemu's sample pods (image kemu/echo). GET any path: who answered and what was
    asked, as JSON (or plain text with ?format=text or Accept: text/plain). /healthz answers 200 until
    --fail-after, then 500; /readyz answers 503 until --ready-after, then 200. The TCP port echoes
    every byte back. With --journal FILE every start appends a line (pod name, start time) to FILE
    and GET /journal shows it.

    """

/// stdio's streams are shared mutable state to Swift 6; plain write(2) is all this needs.
func put(_ text: String, to fd: Int32 = 2) {
    let bytes = Array(text.utf8)
    var done = 0
    while done < bytes.count {
        let n = bytes[done...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n <= 0 { return }
        done += n
    }
}

/// A C string in a buffer, up to its terminating zero.
func string(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

func fail(_ message: String) -> Never {
    put("Error: \(message)\n\(usage)")
    exit(64)
}

func parse(_ arguments: [String]) -> Settings {
    var settings = Settings()
    var rest = arguments[...]
    while let argument = rest.popFirst() {
        if argument == "-h" || argument == "--help" { put(usage, to: 1); exit(0) }
        var name = argument, value: String?
        if let equals = argument.firstIndex(of: "=") {
            name = String(argument[..<equals])
            value = String(argument[argument.index(after: equals)...])
        }
        guard name.hasPrefix("--") else { fail("unexpected argument '\(argument)'") }
        guard let given = value ?? rest.popFirst() else { fail("missing value for '\(name)'") }
        func port() -> Int {
            guard let p = Int(given), (0...65535).contains(p) else { fail("\(name) \(given) is not a TCP port (0-65535)") }
            return p
        }
        func seconds() -> Double {
            guard let s = Double(given), s.isFinite, s >= 0, s < 1e9 else { fail("\(name) must be a number of seconds, not negative (got '\(given)')") }
            return s
        }
        switch name {
        case "--port": settings.port = port()
        case "--tcp-port": settings.tcpPort = port()
        case "--address": settings.address = given
        case "--ready-after": settings.readyAfter = seconds()
        case "--fail-after": settings.failAfter = seconds()
        case "--exit-after": settings.exitAfter = seconds()
        case "--journal": settings.journal = given
        default: fail("unknown option '\(name)'")
        }
    }
    if settings.port == 0 { fail("--port must not be 0") }
    return settings
}

func monotonic() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

func environment(_ name: String) -> String { getenv(name).map { String(cString: $0) } ?? "" }

/// Seconds since the epoch as ISO 8601 (UTC).
func iso8601(_ seconds: time_t) -> String {
    var t = seconds, parts = tm()
    gmtime_r(&t, &parts)
    var buffer = [CChar](repeating: 0, count: 32)
    let n = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%SZ", &parts)
    return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

// MARK: - Sockets

func listenTCP(_ address: String, _ port: Int) -> Int32 {
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    guard inet_pton(AF_INET, address, &addr.sin_addr) == 1 else { fail("--address \(address) is not an IPv4 address") }
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { put("kemu-echo: socket: \(String(cString: strerror(errno)))\n"); exit(1) }
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    let bound = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0, listen(fd, 1024) == 0 else {
        put("kemu-echo: cannot listen on \(address):\(port): \(String(cString: strerror(errno)))\n")
        exit(1)
    }
    return fd
}

/// "ip:port" of the peer.
func peerName(_ fd: Int32) -> String {
    var addr = sockaddr_in(), length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) }
    }
    guard ok == 0 else { return "" }
    var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
    inet_ntop(AF_INET, &addr.sin_addr, &text, socklen_t(text.count))
    return "\(string(text)):\(UInt16(bigEndian: addr.sin_port))"
}

// MARK: - HTTP

struct Request {
    var method = ""
    var target = ""
    var version = ""
    var headers: [(name: String, value: String)] = []

    func header(_ name: String) -> String? { headers.first { $0.name == name }?.value }

    var path: Substring { target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? "" }

    var wantsText: Bool {
        let query = target.split(separator: "?", maxSplits: 1).dropFirst().first ?? ""
        return query.split(separator: "&").contains { $0 == "format=text" } || (header("accept") ?? "").hasPrefix("text/plain")
    }

    var keepAlive: Bool {
        let connection = (header("connection") ?? "").lowercased()
        return version == "HTTP/1.1" ? !connection.contains("close") : connection.contains("keep-alive")
    }
}

enum Parsed {
    case incomplete
    case request(Request, consumed: Int)
    case bad(status: Int, reason: String)
}

let maxHead = 64 * 1024
let maxBody = 8 * 1024 * 1024

func find(_ needle: [UInt8], in bytes: [UInt8], from: Int = 0) -> Int? {
    guard from >= 0, bytes.count >= needle.count + from else { return nil }
    var i = from
    search: while i + needle.count <= bytes.count {
        for j in 0..<needle.count where bytes[i + j] != needle[j] {
            i += 1
            continue search
        }
        return i
    }
    return nil
}

/// One request from the front of `buffer` (head, then a Content-Length or chunked body, which the
/// answer does not use but must be read past to keep the connection in step).
func parseRequest(_ buffer: [UInt8]) -> Parsed {
    guard let end = find([13, 10, 13, 10], in: buffer) else {
        return buffer.count > maxHead ? .bad(status: 431, reason: "Request Header Fields Too Large") : .incomplete
    }
    guard end <= maxHead else { return .bad(status: 431, reason: "Request Header Fields Too Large") }
    let lines = String(decoding: buffer[..<end], as: UTF8.self).split(separator: "\r\n", omittingEmptySubsequences: false)
    let start = lines.first?.split(separator: " ", omittingEmptySubsequences: true) ?? []
    guard start.count == 3, start[2].hasPrefix("HTTP/1."), start[1].hasPrefix("/") || start[1] == "*" else {
        return .bad(status: 400, reason: "Bad Request")
    }
    var request = Request(method: String(start[0]), target: String(start[1]), version: String(start[2]))
    for line in lines.dropFirst() {
        guard let colon = line.firstIndex(of: ":") else { return .bad(status: 400, reason: "Bad Request") }
        let name = line[..<colon].lowercased()
        let value = line[line.index(after: colon)...].drop { $0 == " " || $0 == "\t" }
        request.headers.append((name, String(value.reversed().drop { $0 == " " || $0 == "\t" }.reversed())))
    }
    var consumed = end + 4
    if (request.header("transfer-encoding") ?? "").lowercased().contains("chunked") {
        // size CRLF data CRLF … 0 CRLF (trailers) CRLF
        while true {
            guard let lineEnd = find([13, 10], in: buffer, from: consumed) else { return buffer.count - consumed > maxBody ? .bad(status: 413, reason: "Payload Too Large") : .incomplete }
            let sizeText = String(decoding: buffer[consumed..<lineEnd], as: UTF8.self).split(separator: ";").first ?? ""
            guard let size = Int(sizeText.trimmingSpaces, radix: 16), size >= 0, size <= maxBody else { return .bad(status: 400, reason: "Bad Request") }
            consumed = lineEnd + 2
            if size == 0 {
                guard let trailerEnd = find([13, 10, 13, 10], in: buffer, from: consumed - 2) else { return .incomplete }
                consumed = trailerEnd + 4
                break
            }
            guard buffer.count >= consumed + size + 2 else { return .incomplete }
            consumed += size + 2
            if consumed - end > maxBody { return .bad(status: 413, reason: "Payload Too Large") }
        }
    } else if let lengthText = request.header("content-length") {
        guard let length = Int(lengthText), length >= 0 else { return .bad(status: 400, reason: "Bad Request") }
        guard length <= maxBody else { return .bad(status: 413, reason: "Payload Too Large") }
        guard buffer.count >= consumed + length else { return .incomplete }
        consumed += length
    }
    return .request(request, consumed: consumed)
}

extension Substring {
    var trimmingSpaces: String { String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed()) }
}

func escape(_ s: String) -> String {
    var out = ""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case _ where scalar.value < 0x20:
            let hex = String(scalar.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out
}

let reasons = [200: "OK", 400: "Bad Request", 404: "Not Found", 413: "Payload Too Large", 431: "Request Header Fields Too Large",
               500: "Internal Server Error", 503: "Service Unavailable"]

func response(_ status: Int, _ contentType: String, _ body: String, keepAlive: Bool) -> [UInt8] {
    let bytes = Array(body.utf8)
    var head = "HTTP/1.1 \(status) \(reasons[status] ?? "Status")\r\nContent-Type: \(contentType)\r\nContent-Length: \(bytes.count)\r\nServer: kemu-echo\r\n"
    head += keepAlive ? "\r\n" : "Connection: close\r\n\r\n"
    return Array(head.utf8) + bytes
}

struct Identity {
    let pod = environment("POD_NAME"), namespace = environment("POD_NAMESPACE"), podIP = environment("POD_IP"), node = environment("NODE_NAME")

    func answer(_ request: Request, client: String, keepAlive: Bool) -> [UInt8] {
        if request.wantsText {
            let text = "pod=\(pod) namespace=\(namespace) ip=\(podIP) node=\(node) client=\(client) \(request.method) \(request.target)\n"
            return response(200, "text/plain; charset=utf-8", text, keepAlive: keepAlive)
        }
        let fields = [("pod", pod), ("namespace", namespace), ("podIP", podIP), ("node", node), ("client", client),
                      ("method", request.method), ("path", request.target)]
        let headers = request.headers.map { "\"\(escape($0.name))\":\"\(escape($0.value))\"" }.joined(separator: ",")
        let body = "{" + fields.map { "\"\($0.0)\":\"\(escape($0.1))\"" }.joined(separator: ",") + ",\"headers\":{\(headers)}}\n"
        return response(200, "application/json", body, keepAlive: keepAlive)
    }
}

// MARK: - The loop

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

// A parent may have blocked signals (Foundation's Process passes its thread's mask on): SIGTERM
// must reach this program whoever started it.
var none = sigset_t()
sigemptyset(&none)
sigprocmask(SIG_SETMASK, &none, nil)
signal(SIGPIPE, SIG_IGN)
// SIGTERM/SIGINT: nothing to drain but open connections; a clean exit, as kemu's own servers make.
signal(SIGTERM) { _ in _exit(0) }
signal(SIGINT) { _ in _exit(0) }
EchoServer(parse(Array(CommandLine.arguments.dropFirst()))).run()
