import Foundation
import Testing

/// `kemu-echo`, the program of image kemu/echo, from the outside: the answers pods give, its
/// probes' endpoints, and what it says to bad requests and bad flags. On loopback, no root.
@Suite(.serialized) struct EchoProgramTests {
    static let binary = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent(".build/debug/kemu-echo").path

    /// Runs a program to its end: exit status, stdout and stderr together.
    static func run(_ program: String, _ args: [String], environment: [String: String]? = nil) throws -> (code: Int32, out: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: program)
        p.arguments = args
        if let environment { p.environment = environment }
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// An echo server on a free loopback port, running `body`, stopped after.
    /// Ports below Linux's ephemeral range (32768-60999), so no client socket holds them; a port
    /// some other test holds makes the program exit, and another pair is tried.
    func withEcho(_ args: [String] = [], _ body: (Int, Int) throws -> Void) throws {
        for _ in 0..<5 {
            let port = Int.random(in: 20_000...25_999), tcp = port + 6_000
            let p = Process()
            p.executableURL = URL(fileURLWithPath: Self.binary)
            p.arguments = ["--address", "127.0.0.1", "--port", String(port), "--tcp-port", String(tcp)] + args
            p.environment = ["POD_NAME": "web-1", "POD_NAMESPACE": "shop", "POD_IP": "10.244.1.5", "NODE_NAME": "node-1"]
            try p.run()
            defer { if p.isRunning { p.terminate() }; p.waitUntilExit() }
            // Up within 20 s, however loaded the machine (the whole suite runs beside it).
            var up = false
            for _ in 0..<200 where !up && p.isRunning {
                up = (try? Self.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "--max-time", "2", "http://127.0.0.1:\(port)/healthz"]).code) == 0
                if !up { Thread.sleep(forTimeInterval: 0.1) }
            }
            guard up else { continue }
            try body(port, tcp)
            return
        }
        Issue.record("kemu-echo did not start on any of 5 port pairs")
    }

    @Test func saysWhoAnsweredAndWhatWasAsked() throws {
        try withEcho { (port: Int, _: Int) throws in
            let json = try Self.run("/usr/bin/curl", ["-sS", "-H", "X-Trace: a\"b", "http://127.0.0.1:\(port)/cart/items?id=7"]).out
            let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
            #expect(object["pod"] as? String == "web-1" && object["namespace"] as? String == "shop")
            #expect(object["podIP"] as? String == "10.244.1.5" && object["node"] as? String == "node-1")
            #expect(object["method"] as? String == "GET" && object["path"] as? String == "/cart/items?id=7")
            #expect((object["client"] as? String)?.hasPrefix("127.0.0.1:") == true)
            #expect((object["headers"] as? [String: String])?["x-trace"] == "a\"b")
            let text = try Self.run("/usr/bin/curl", ["-sS", "-X", "POST", "-d", "x=1", "http://127.0.0.1:\(port)/?format=text"]).out
            #expect(text.hasPrefix("pod=web-1 namespace=shop ip=10.244.1.5 node=node-1 client=127.0.0.1:") && text.hasSuffix(" POST /?format=text\n"))
            // Keep-alive: two requests on one connection, both answered.
            let two = try Self.run("/usr/bin/curl", ["-sS", "http://127.0.0.1:\(port)/a?format=text", "http://127.0.0.1:\(port)/b?format=text"]).out
            #expect(two.split(separator: "\n").count == 2)
            // A chunked body is read past, and the answer follows.
            let chunked = try Self.run("/usr/bin/curl", ["-sS", "-H", "Transfer-Encoding: chunked", "-d", "payload", "http://127.0.0.1:\(port)/c?format=text"]).out
            #expect(chunked.hasSuffix("POST /c?format=text\n"))
        }
    }

    @Test func probesEndpointsFollowTheFlags() throws {
        try withEcho(["--ready-after", "30", "--fail-after", "0"]) { (port: Int, _: Int) throws in
            let code = { (path: String) in try Self.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(port)\(path)"]).out }
            #expect(try code("/readyz") == "503")
            #expect(try code("/healthz") == "200")
            #expect(try code("/anything") == "200")
            #expect(try Self.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "DELETE", "http://127.0.0.1:\(port)/"]).out == "404")
        }
    }

    @Test func badRequestsAreRefusedAndTheServerGoesOn() throws {
        try withEcho { (port: Int, tcp: Int) throws in
            // Garbage, an oversized header, a bad length: each a 4xx, never a crash.
            let garbage = try Self.run("/bin/bash", ["-c", "exec 3<>/dev/tcp/127.0.0.1/\(port); printf 'NONSENSE\\r\\n\\r\\n' >&3; head -c 24 <&3"]).out
            #expect(garbage == "HTTP/1.1 400 Bad Request")
            let huge = String(repeating: "a", count: 70_000)
            let big = try Self.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "X-Big: \(huge)", "http://127.0.0.1:\(port)/"]).out
            #expect(big == "431")
            let length = try Self.run("/bin/bash", ["-c", "exec 3<>/dev/tcp/127.0.0.1/\(port); printf 'POST / HTTP/1.1\\r\\nContent-Length: -5\\r\\n\\r\\n' >&3; head -c 24 <&3"]).out
            #expect(length == "HTTP/1.1 400 Bad Request")
            // The TCP port echoes bytes back.
            let echoed = try Self.run("/bin/bash", ["-c", "exec 3<>/dev/tcp/127.0.0.1/\(tcp); printf 'ping-pong' >&3; head -c 9 <&3"]).out
            #expect(echoed == "ping-pong")
            #expect(try Self.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(port)/healthz"]).out == "200")
        }
    }

    @Test func badFlagsNameTheFlag() throws {
        let zero = try Self.run(Self.binary, ["--port", "0"])
        #expect(zero.code == 64 && zero.out.hasPrefix("Error: --port must not be 0"))
        let negative = try Self.run(Self.binary, ["--ready-after", "-1"])
        #expect(negative.code == 64 && negative.out.contains("--ready-after"))
        let port = try Self.run(Self.binary, ["--tcp-port", "70000"])
        #expect(port.code == 64 && port.out.contains("--tcp-port 70000 is not a TCP port"))
        let unknown = try Self.run(Self.binary, ["--colour", "red"])
        #expect(unknown.code == 64 && unknown.out.contains("unknown option '--colour'"))
        let missing = try Self.run(Self.binary, ["--journal"])
        #expect(missing.code == 64 && missing.out.contains("missing value for '--journal'"))
    }

    @Test func exitAfterEndsWithStatusOne() throws {
        let result = try Self.run(Self.binary, ["--address", "127.0.0.1", "--port", String(Int.random(in: 26_000...31_000)), "--tcp-port", "0", "--exit-after", "0.2"])
        #expect(result.code == 1 && result.out.contains("exiting after 0.2 s (--exit-after)"))
    }
}
