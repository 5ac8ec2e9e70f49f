import Foundation
import Glibc
import KemuSystem
import Synchronization

/// The experiments' load generator, run inside the namespace the load comes from (a pod, a node,
/// the client host): `clients` threads send HTTP GETs to a target at a total `rate`, each over a
/// new connection (`Connection: close`) or over one kept-alive connection per client.
///
/// A rate-driven load is open-loop, as wrk2's: request n of client i is due at
/// (n × clients + i) / rate from the start, whatever happened to the requests before it, and its
/// latency counts from then. A client held up by a stalled request sends its backlog late, back to
/// back; timed from when each actually went out (the raw latency, also kept) that backlog would
/// look fast, and a stall would hide in the percentiles (coordinated omission).
public struct LoadGenerator: Sendable {
    public struct Settings: Sendable {
        public var target: SocketAddress
        public var clients = 4
        /// Requests per second in all; 0: each client as fast as it can (closed loop).
        public var rate = 100.0
        public var duration = 10.0
        /// Seconds a request may take, from when it went out.
        public var timeout = 2.0
        public var keepAlive = false
        public var path = "/?format=text"

        public init(target: SocketAddress) { self.target = target }

        /// What is wrong with these settings, naming the setting; nil when nothing is.
        public var problem: String? {
            if clients < 1 || clients > 4096 { return "clients: \(clients) is not from 1 to 4096" }
            if !(rate >= 0 && rate <= 1_000_000) { return "rate: \(rate) is not from 0 to 1000000 requests per second" }
            if !(duration > 0 && duration <= 86_400) { return "duration: \(duration) is not from 0 to 86400 seconds" }
            if !(timeout > 0 && timeout <= 3600) { return "timeout: \(timeout) is not from 0 to 3600 seconds" }
            return nil
        }
    }

    public let settings: Settings

    public init(_ settings: Settings) { self.settings = settings }

    /// Sends the load on threads of its own and returns when it is over; `record` hears of every
    /// request as it ends, from those threads.
    public func run(_ record: @escaping @Sendable (LoadResult) -> Void) {
        let s = settings
        signal(SIGPIPE, SIG_IGN)
        let start = Date().timeIntervalSince1970
        let done = DispatchGroup()
        for index in 0..<s.clients {
            done.enter()
            startThread(named: "kemu-load-\(index)") {
                defer { done.leave() }
                var client = HTTPLoadClient(address: s.target, timeout: s.timeout, keepAlive: s.keepAlive, path: s.path)
                var n = 0
                while true {
                    let now = Date().timeIntervalSince1970
                    let due = s.rate > 0 ? start + Double(n * s.clients + index) / s.rate : now
                    if due >= start + s.duration { break }
                    if due > now { usleep(UInt32(min((due - now) * 1e6, 1e6))) ; continue }
                    let sent = Date().timeIntervalSince1970
                    let intended = s.rate > 0 ? due : sent  // closed loop: due when it goes
                    let outcome = client.request()
                    let end = Date().timeIntervalSince1970
                    record(LoadResult(intended: intended, sent: sent, ok: outcome.ok, detail: outcome.detail,
                                      correctedMs: (end - intended) * 1000, rawMs: (end - sent) * 1000))
                    n += 1
                }
                client.close()
            }
        }
        done.wait()
    }
}

/// One request of a load: when it was due and when it went, what came of it, and how long it took
/// from either (`correctedMs` from when it was due, `rawMs` from when it went out).
public struct LoadResult: Sendable, Equatable {
    public var intended: Double
    public var sent: Double
    public var ok: Bool
    /// The pod that answered, or the failure's kind (refused, reset, connect-timeout, timeout,
    /// unreachable, closed, http-CODE).
    public var detail: String
    public var correctedMs: Double
    public var rawMs: Double

    public init(intended: Double, sent: Double, ok: Bool, detail: String, correctedMs: Double, rawMs: Double) {
        (self.intended, self.sent, self.ok, self.detail, self.correctedMs, self.rawMs) = (intended, sent, ok, detail, correctedMs, rawMs)
    }

    /// The line `kemu loadgen` prints: `INTENDED SENT ok POD CORRECTED_MS RAW_MS` (or `fail KIND`).
    public var line: String {
        String(format: "%.4f %.4f %@ %@ %.2f %.2f\n", intended, sent, ok ? "ok" : "fail", detail, correctedMs, rawMs)
    }

    /// Parses `line`; nil for anything else.
    public init?(line: Substring) {
        let f = line.split(separator: " ")
        guard f.count == 6, let intended = Double(f[0]), let sent = Double(f[1]), f[2] == "ok" || f[2] == "fail",
              let corrected = Double(f[4]), let raw = Double(f[5]), intended.isFinite, sent.isFinite, corrected.isFinite, raw.isFinite else { return nil }
        self.init(intended: intended, sent: sent, ok: f[2] == "ok", detail: String(f[3]), correctedMs: corrected, rawMs: raw)
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

    /// Whether it was answered 200, and by which pod (or the failure's kind).
    mutating func request() -> (ok: Bool, detail: String) {
        let deadline = Date().timeIntervalSince1970 + timeout
        if fd < 0 {
            if let failure = connect(deadline) { return (false, failure) }
        }
        let outcome = exchange(deadline)
        if !keepAlive || !outcome.ok { close() }
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
    private mutating func exchange(_ deadline: Double) -> (ok: Bool, detail: String) {
        var sent = 0
        while sent < requestBytes.count {
            let n = requestBytes.withUnsafeBytes { TCPSocket.send(fd, from: $0.baseAddress! + sent, count: requestBytes.count - sent) }
            if n == -Int(EAGAIN) { guard wait(POLLOUT, deadline) else { return (false, "timeout") }; continue }
            if n < 0 { return (false, Self.kind(Int32(-n))) }
            sent += n
        }
        var response: [UInt8] = []
        while true {
            let n = buffer.withUnsafeMutableBytes { TCPSocket.receive(fd, into: $0.baseAddress!, count: $0.count) }
            if n == -Int(EAGAIN) { guard wait(POLLIN, deadline) else { return (false, "timeout") }; continue }
            if n < 0 { return (false, Self.kind(Int32(-n))) }
            if n > 0 { response += buffer[..<n] }
            if let result = Self.parse(response, ended: n == 0) { return result }
            if n == 0 { return (false, "closed") }
        }
    }

    /// Whether the response is a 200, and the pod that answered (`pod=NAME` in the body, `-` if
    /// none) or `http-CODE`; nil while the response is incomplete.
    static func parse(_ bytes: [UInt8], ended: Bool) -> (ok: Bool, detail: String)? {
        guard let headerEnd = bytes.indices.dropLast(3).first(where: { bytes[$0] == 13 && bytes[$0 + 1] == 10 && bytes[$0 + 2] == 13 && bytes[$0 + 3] == 10 }) else {
            return nil
        }
        let head = String(decoding: bytes[..<headerEnd], as: UTF8.self).lowercased()
        let bodyStart = headerEnd + 4
        let length = head.split(separator: "\r\n").first { $0.hasPrefix("content-length:") }.flatMap { Int($0.dropFirst(15).trimmingCharacters(in: .whitespaces)) }
        if let length, bytes.count - bodyStart < length { return nil }
        if length == nil && !ended { return nil }
        let status = head.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        guard status == 200 else { return (false, "http-\(status)") }
        let body = String(decoding: bytes[bodyStart...], as: UTF8.self)
        let pod = body.split(whereSeparator: { $0.isWhitespace }).first { $0.hasPrefix("pod=") && $0.count > 4 }.map { String($0.dropFirst(4)) }
        return (true, pod ?? "-")
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
