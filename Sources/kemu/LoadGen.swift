import ArgumentParser
import Foundation
import Glibc
import KemuSystem
import Synchronization

/// The experiments' load generator, run inside the namespace the load comes from (a pod, a node,
/// the client host): `clients` threads send HTTP GETs to a target at a total `rate`, each over a
/// new connection (`Connection: close`) or over one kept-alive connection per client, and print a
/// line per request: `TIME OUTCOME DETAIL MILLISECONDS` — `ok POD` (the echo pod that answered)
/// or `fail KIND` (refused, reset, connect-timeout, timeout, unreachable, closed, http-CODE).
struct LoadGen: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loadgen", abstract: "HTTP load for experiments: a line per request on stdout.", shouldDisplay: false)

    @Option(help: "IP:PORT.") var target: String
    @Option(help: "Concurrent clients.") var clients = 4
    @Option(help: "Requests per second in all (0: each client as fast as it can).") var rate = 100.0
    @Option(help: "Seconds to run.") var duration = 10.0
    @Option(help: "Seconds a request may take.") var timeout = 2.0
    @Flag(help: "Keep each client's connection open across requests.") var keepAlive = false
    @Option(help: "Request path.") var path = "/?format=text"

    func run() throws {
        guard let address = Relay.parse(target) else { throw ValidationError("--target: \(target) is not IP:PORT") }
        guard clients > 0, rate >= 0, duration > 0, timeout > 0 else { throw ValidationError("--clients, --duration and --timeout must be positive, --rate not negative") }
        signal(SIGPIPE, SIG_IGN)
        let out = Mutex(())
        let start = Date().timeIntervalSince1970
        let done = DispatchGroup()
        for index in 0..<clients {
            done.enter()
            Thread { [self] in
                defer { done.leave() }
                var client = HTTPLoadClient(address: address, timeout: timeout, keepAlive: keepAlive, path: path)
                var n = 0
                while true {
                    // Client i sends request n at (n × clients + i) / rate: together, evenly spread.
                    let due = rate > 0 ? start + Double(n * clients + index) / rate : Date().timeIntervalSince1970
                    if due >= start + duration { break }
                    let wait = due - Date().timeIntervalSince1970
                    if wait > 0 { usleep(UInt32(wait * 1e6)) }
                    let began = Date().timeIntervalSince1970
                    let outcome = client.request()
                    let line = String(format: "%.4f %@ %.2f\n", began, outcome, (Date().timeIntervalSince1970 - began) * 1000)
                    out.withLock { _ in _ = line.withCString { write(1, $0, strlen($0)) } }
                    n += 1
                }
                client.close()
            }.start()
        }
        done.wait()
    }
}

/// One client's connection and the bytes it reads.
struct HTTPLoadClient {
    let address: SocketAddress
    let timeout: Double
    let keepAlive: Bool
    let requestBytes: [UInt8]
    var fd: Int32 = -1
    var buffer = [UInt8](repeating: 0, count: 16 * 1024)

    init(address: SocketAddress, timeout: Double, keepAlive: Bool, path: String) {
        self.address = address
        self.timeout = timeout
        self.keepAlive = keepAlive
        requestBytes = Array("GET \(path) HTTP/1.1\r\nHost: \(address.ip)\r\nConnection: \(keepAlive ? "keep-alive" : "close")\r\n\r\n".utf8)
    }

    mutating func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    /// `ok POD` or `fail KIND`.
    mutating func request() -> String {
        let deadline = Date().timeIntervalSince1970 + timeout
        if fd < 0 {
            if let failure = connect(deadline) { return "fail \(failure)" }
        }
        let outcome = exchange(deadline)
        if !keepAlive || outcome.hasPrefix("fail") { close() }
        return outcome
    }

    private mutating func connect(_ deadline: Double) -> String? {
        let (s, err) = TCPSocket.connect(to: address)
        if s < 0 { return Self.kind(err) }
        fd = s
        if err != 0 {
            guard wait(POLLOUT, deadline) else { close(); return "connect-timeout" }
            let pending = TCPSocket.pendingError(fd)
            if pending != 0 { close(); return Self.kind(pending) }
        }
        return nil
    }

    /// Sends the request and reads one response: headers, then Content-Length bytes (or to the end).
    private mutating func exchange(_ deadline: Double) -> String {
        var sent = 0
        while sent < requestBytes.count {
            let n = requestBytes.withUnsafeBytes { TCPSocket.send(fd, from: $0.baseAddress! + sent, count: requestBytes.count - sent) }
            if n == -Int(EAGAIN) { guard wait(POLLOUT, deadline) else { return "fail timeout" }; continue }
            if n < 0 { return "fail \(Self.kind(Int32(-n)))" }
            sent += n
        }
        var response: [UInt8] = []
        while true {
            let n = buffer.withUnsafeMutableBytes { TCPSocket.receive(fd, into: $0.baseAddress!, count: $0.count) }
            if n == -Int(EAGAIN) { guard wait(POLLIN, deadline) else { return "fail timeout" }; continue }
            if n < 0 { return "fail \(Self.kind(Int32(-n)))" }
            if n > 0 { response += buffer[..<n] }
            if let result = Self.parse(response, ended: n == 0) { return result }
            if n == 0 { return "fail closed" }
        }
    }

    /// nil while the response is incomplete.
    static func parse(_ bytes: [UInt8], ended: Bool) -> String? {
        guard let headerEnd = bytes.indices.dropLast(3).first(where: { bytes[$0] == 13 && bytes[$0 + 1] == 10 && bytes[$0 + 2] == 13 && bytes[$0 + 3] == 10 }) else {
            return nil
        }
        let head = String(decoding: bytes[..<headerEnd], as: UTF8.self).lowercased()
        let bodyStart = headerEnd + 4
        let length = head.split(separator: "\r\n").first { $0.hasPrefix("content-length:") }.flatMap { Int($0.dropFirst(15).trimmingCharacters(in: .whitespaces)) }
        if let length, bytes.count - bodyStart < length { return nil }
        if length == nil && !ended { return nil }
        let status = head.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        guard status == 200 else { return "fail http-\(status)" }
        let body = String(decoding: bytes[bodyStart...], as: UTF8.self)
        let pod = body.split(whereSeparator: { $0 == " " || $0 == "\n" }).first { $0.hasPrefix("pod=") }.map { String($0.dropFirst(4)) }
        return "ok \(pod ?? "-")"
    }

    private func wait(_ events: Int32, _ deadline: Double) -> Bool {
        let left = Int32((deadline - Date().timeIntervalSince1970) * 1000)
        guard left > 0 else { return false }
        var p = pollfd(fd: fd, events: Int16(events), revents: 0)
        return poll(&p, 1, left) > 0
    }

    static func kind(_ err: Int32) -> String {
        switch err {
        case ECONNREFUSED: "refused"
        case ECONNRESET, EPIPE: "reset"
        case ETIMEDOUT: "timeout"
        case EHOSTUNREACH, ENETUNREACH: "unreachable"
        default: "errno-\(err)"
        }
    }
}
