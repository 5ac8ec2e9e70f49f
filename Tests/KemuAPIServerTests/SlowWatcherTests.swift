import Foundation
import Glibc
import KemuAPI
import KemuClient
import KemuTestSupport
import Testing

/// A watch client that stops reading costs the server a bounded backlog, then its connection;
/// everyone else is served throughout (issue 16, item 3).
@Suite(.serialized) struct SlowWatcherTests {
    /// A plain TCP connection to the server with a watch request sent and a tiny receive buffer.
    func stalledWatch(port: Int, path: String) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var small: Int32 = 4096
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        try #require(connected == 0)
        let request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        _ = request.withCString { send(fd, $0, strlen($0), 0) }
        return fd
    }

    /// `drain` on a thread of its own: blocking reads must not hold a thread of the pool the
    /// other suites' tasks run on.
    func drainOffPool(_ fd: Int32, seconds: Double) async -> (closed: Bool, text: String) {
        await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: drain(fd, seconds: seconds)) }.start()
        }
    }

    /// Reads until the server closes the connection or `seconds` pass; returns (closed, bytes).
    func drain(_ fd: Int32, seconds: Double) -> (closed: Bool, text: String) {
        var tv = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let n = recv(fd, &chunk, chunk.count, 0)
            if n == 0 { return (true, String(decoding: data, as: UTF8.self)) }
            if n > 0 { data += chunk[0..<n] } else if errno == ECONNRESET { return (true, String(decoding: data, as: UTF8.self)) }
        }
        return (false, String(decoding: data, as: UTF8.self))
    }

    func rssMiB(_ pid: Int32) -> Double {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let kb = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }?.split(separator: " ").dropFirst().first.flatMap { Double($0) } ?? 0
        return kb / 1024
    }

    @Test func aWatcherThatStopsReadingIsCutOffAndTheServerStaysSmall() async throws {
        let server = try ServerProcess(insecure: true)
        defer { server.stop() }
        let client = try server.client()
        let pid = try #require(server.process?.processIdentifier)
        let stalled = try stalledWatch(port: server.port, path: "/api/v1/namespaces/default/configmaps?watch=1")
        defer { close(stalled) }
        let filler = String(repeating: "x", count: 16 << 10)
        let before = rssMiB(pid)
        // 2,000 events of 16 KiB: 32 MiB the stalled client would have to hold.
        for i in 0..<2_000 {
            var cm: JSON = ["apiVersion": "v1", "kind": "ConfigMap", "data": ["blob": .string(filler)]]
            cm.name = "cm-\(i)"
            cm.namespace = "default"
            _ = try await client.create(APIResources.configMaps, cm)
        }
        // Everyone else is served meanwhile and after.
        #expect(try await client.list(APIResources.configMaps, namespace: "default").items.count == 2_000)
        let (closed, text) = await drainOffPool(stalled, seconds: 15)
        #expect(closed, "the stalled watch is still open")
        #expect(text.hasPrefix("HTTP/1.1 200"), "\(text.prefix(200))")
        // The store holds the 2,000 objects (~32 MiB); the stalled watch may add its backlog,
        // never a copy of every event.
        let after = rssMiB(pid)
        #expect(after - before < 80, "RSS grew from \(before) to \(after) MiB")
        #expect(try await send(client, "GET", "/api/v1/namespaces/default").code == 200)
    }
}
