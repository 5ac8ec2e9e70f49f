import Glibc

// The command line and small helpers on the C library.

struct Settings {
    var port = 8080
    var tcpPort = 9000
    var udpPort = 9000
    var address = "0.0.0.0"
    var readyAfter = 0.0
    var failAfter = 0.0
    var exitAfter = 0.0
    var journal: String?
}

let usage = """
    USAGE: kemu-echo [--port <port>] [--tcp-port <tcp-port>] [--udp-port <udp-port>] [--address <address>]
                     [--ready-after <seconds>] [--fail-after <seconds>] [--exit-after <seconds>] [--journal <file>]

    The echo server of kemu's sample pods (image kemu/echo). GET any path: who answered and what was
    asked, as JSON (or plain text with ?format=text or Accept: text/plain). /healthz answers 200 until
    --fail-after, then 500; /readyz answers 503 until --ready-after, then 200. The TCP port echoes
    every byte back; the UDP port (0: none) every datagram, except one that starts with '?', which
    is answered with who answered and whom: "pod=NAME ip=POD-IP node=NODE client=IP:PORT". With --journal FILE every start appends a line (pod name, start time) to FILE
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
        case "--udp-port": settings.udpPort = port()
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
