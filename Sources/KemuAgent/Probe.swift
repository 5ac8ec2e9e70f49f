import Foundation
import Glibc
import KemuAPI
import KemuSystem

/// A probe's results turned into a verdict as kubelet does: `successThreshold` passes in a row
/// make it pass, `failureThreshold` failures in a row make it fail; a verdict is reported once,
/// when it changes.
struct ProbeVerdicts: Sendable {
    let successThreshold: Int
    let failureThreshold: Int
    private var passes = 0
    private var failures = 0
    private(set) var verdict: Bool?

    init(_ probe: Probe) {
        successThreshold = probe.successThreshold
        failureThreshold = probe.failureThreshold
    }

    /// Records one result; returns the new verdict when this result changes it.
    mutating func record(passed: Bool) -> Bool? {
        if passed {
            (passes, failures) = (passes + 1, 0)
            guard passes >= successThreshold, verdict != true else { return nil }
        } else {
            (passes, failures) = (0, failures + 1)
            guard failures >= failureThreshold, verdict != false else { return nil }
        }
        verdict = passed
        return passed
    }
}

/// One of a container's probes (startup, liveness, readiness) as kubelet reads it: the action
/// (tcpSocket, httpGet, exec) and its timing, with upstream's defaults.
struct Probe: Sendable {
    enum Action: Sendable {
        case tcp(port: Int)
        case http(port: Int, path: String, scheme: String, headers: [(String, String)])
        case exec([String])
    }

    var action: Action
    var initialDelay: Duration
    var period: Duration
    var timeout: Duration
    var successThreshold: Int
    var failureThreshold: Int

    /// nil when the spec has no usable action (validation should have refused it).
    init?(_ spec: JSON?, container: JSON) {
        guard let spec else { return nil }
        func port(_ value: JSON?) -> Int? {
            if let n = value?.int { return Int(n) }
            guard let name = value?.string else { return nil }
            let named = (container["ports"]?.array ?? []).first { $0["name"]?.string == name }
            return named?["containerPort"]?.int.map(Int.init) ?? Int(name)
        }
        if let tcp = spec["tcpSocket"], let p = port(tcp["port"]) {
            action = .tcp(port: p)
        } else if let http = spec["httpGet"], let p = port(http["port"]) {
            let headers = (http["httpHeaders"]?.array ?? []).compactMap { h -> (String, String)? in
                guard let name = h["name"]?.string else { return nil }
                return (name, h["value"]?.string ?? "")
            }
            action = .http(port: p, path: http["path"]?.string ?? "/", scheme: http["scheme"]?.string ?? "HTTP", headers: headers)
        } else if let command = spec["exec"]?["command"]?.array?.compactMap(\.string), !command.isEmpty {
            action = .exec(command)
        } else {
            return nil
        }
        let seconds = { (key: String, fallback: Int64) in Duration.seconds(max(spec[key]?.int ?? fallback, 0)) }
        initialDelay = seconds("initialDelaySeconds", 0)
        period = max(seconds("periodSeconds", 10), .seconds(1))
        timeout = max(seconds("timeoutSeconds", 1), .seconds(1))
        successThreshold = Int(max(spec["successThreshold"]?.int ?? 1, 1))
        failureThreshold = Int(max(spec["failureThreshold"]?.int ?? 3, 1))
    }

    var kind: String {
        switch action {
        case .tcp: "tcp"
        case .http: "http"
        case .exec: "exec"
        }
    }

    /// Runs the probe once against a pod at `ip` (its processes inside `namespace`; an exec
    /// command inside the container whose process is `container`): nil on success, else what
    /// failed, in kubelet's words.
    func run(ip: String, namespace: NetworkNamespace, environment: [String: String], reaper: ProcessReaper,
             container: pid_t? = nil) async -> String? {
        switch action {
        case .tcp(let port):
            return await Self.blocking { Self.connect(ip, port, timeout: timeout).error.map { "dial tcp \(ip):\(port): \($0)" } }
        case .http(let port, let path, let scheme, let headers):
            if scheme.uppercased() == "HTTPS" { return "HTTPS probes are not supported by kemu" }
            return await Self.blocking { Self.httpGet(ip, port, path, headers, timeout: timeout) }
        case .exec(let command):
            do {
                var settings = Spawn.Options(namespace: namespace, environment: environment)
                settings.newSession = true
                settings.joinProcess = container  // its root, its /tmp: where its files are
                let options = settings
                let exit = try await withThrowingTaskGroup(of: ProcessExit?.self) { group in
                    let pid = PIDBox()
                    group.addTask {
                        try await reaper.spawnAndWait(command, options) { pid.set($0) }
                    }
                    group.addTask {
                        try await Task.sleep(for: timeout)
                        return nil
                    }
                    let first = try await group.next()!
                    if first == nil, let p = pid.get() { kill(-p, SIGKILL) }
                    group.cancelAll()
                    return first
                }
                guard let exit else { return "command timed out after \(timeout.components.seconds)s" }
                return exit == .exited(0) ? nil : "command \(command.joined(separator: " ")) \(exit)"
            } catch {
                return "\(error)"
            }
        }
    }

    static func blocking(_ body: @escaping @Sendable () -> String?) async -> String? {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: body()) }
        }
    }

    /// A TCP connection to ip:port within `timeout`; the socket (caller closes it) or the error.
    static func connect(_ ip: String, _ port: Int, timeout: Duration) -> (fd: Int32, error: String?) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { return (-1, String(cString: strerror(errno))) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(truncatingIfNeeded: port).bigEndian)
        inet_pton(AF_INET, ip, &address.sin_addr)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if result != 0 && errno != EINPROGRESS {
            let message = errno == ECONNREFUSED ? "connect: connection refused" : String(cString: strerror(errno))
            close(fd)
            return (-1, message)
        }
        var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        let ready = poll(&poller, 1, Int32(timeout.components.seconds * 1000))
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
        if ready <= 0 || error != 0 {
            close(fd)
            if ready <= 0 { return (-1, "i/o timeout") }
            return (-1, error == ECONNREFUSED ? "connect: connection refused" : String(cString: strerror(error)))
        }
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK)
        return (fd, nil)
    }

    /// GET with kubelet's user agent; 200–399 passes.
    static func httpGet(_ ip: String, _ port: Int, _ path: String, _ headers: [(String, String)], timeout: Duration) -> String? {
        let (fd, error) = connect(ip, port, timeout: timeout)
        if let error { return "Get \"http://\(ip):\(port)\(path)\": dial tcp \(ip):\(port): \(error)" }
        defer { close(fd) }
        var tv = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var request = "GET \(path) HTTP/1.1\r\nHost: \(ip):\(port)\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\nConnection: close\r\n"
        for (name, value) in headers { request += "\(name): \(value)\r\n" }
        request += "\r\n"
        guard send(fd, request, request.utf8.count, Int32(MSG_NOSIGNAL)) == request.utf8.count else {
            return "Get \"http://\(ip):\(port)\(path)\": \(String(cString: strerror(errno)))"
        }
        var buffer = [UInt8](repeating: 0, count: 512)
        var received = 0
        while received < buffer.count {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + received, $0.count - received, 0) }
            if n <= 0 { break }
            received += n
            if buffer[..<received].contains(UInt8(ascii: "\n")) { break }
        }
        let line = String(decoding: buffer[..<received].prefix { $0 != UInt8(ascii: "\r") && $0 != UInt8(ascii: "\n") }, as: UTF8.self)
        let parts = line.split(separator: " ")
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/"), let code = Int(parts[1]) else {
            return received == 0 ? "Get \"http://\(ip):\(port)\(path)\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
                : "Get \"http://\(ip):\(port)\(path)\": malformed HTTP response"
        }
        return (200..<400).contains(code) ? nil : "HTTP probe failed with statuscode: \(code)"
    }
}

/// A pid handed from the spawning task to the timeout task.
final class PIDBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value: pid_t?
    func set(_ v: pid_t) { lock.lock(); value = v; lock.unlock() }
    func get() -> pid_t? { lock.lock(); defer { lock.unlock() }; return value }
}
