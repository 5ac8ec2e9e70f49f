import Foundation
import KemuAPI
import KemuClient
import KemuTestSupport
import Testing

/// Requests that used to kill `kemu server` (issue 16): each must get its own answer and leave
/// the server serving everyone else.
@Suite(.serialized) struct HostileInputTests {
    func alive(_ server: ServerProcess, _ client: APIClient) async throws -> Bool {
        guard server.process?.isRunning == true else { return false }
        return try await send(client, "GET", "/api/v1/namespaces/default").code == 200
    }

    @Test func watchTimeoutsThatAreNotWholeSecondsAreRefusedByName() async throws {
        let server = try ServerProcess(insecure: true)
        defer { server.stop() }
        let client = try server.client()
        for bad in ["nan", "inf", "-inf", "1e300", "1.5", "-1", "99999999999999999999", "abc", ""] {
            let (code, body) = try await send(client, "GET", "/api/v1/pods?watch=1&timeoutSeconds=\(bad)")
            #expect(code == 400, "timeoutSeconds=\(bad): \(code) \(body)")
            #expect(body.contains("timeoutSeconds"), "\(body)")
        }
        #expect(try await alive(server, client))
        // The largest int64 is a valid, very long watch: served (and cut short here).
        let curl = try ServerProcess.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "1",
                                                           "\(client.server)/api/v1/pods?watch=1&timeoutSeconds=9223372036854775807"])
        #expect(curl.out == "200", "\(curl)")
        #expect(try await alive(server, client))
    }

    @Test func aProtobufLengthBeyondIntIsABadRequest() async throws {
        let server = try ServerProcess(insecure: true)
        defer { server.stop() }
        let client = try server.client()
        // k8s\0, then runtime.Unknown field 1 (length-delimited) claiming 2^64 − 1 bytes.
        let body: [UInt8] = Array("k8s".utf8) + [0, 0x0A] + Array(repeating: 0xFF, count: 9) + [0x01]
        let (code, text) = try await send(client, "POST", "/api/v1/namespaces", body: body, contentType: "application/vnd.kubernetes.protobuf")
        #expect(code == 400, "\(text)")
        #expect(try await alive(server, client))
    }

    @Test func logLimitsMustBeWholeNumbers() async throws {
        let logs = NSTemporaryDirectory() + "kemu-logs-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: logs) }
        let server = try ServerProcess(insecure: true, arguments: ["--pod-logs", logs])
        defer { server.stop() }
        let client = try server.client()
        _ = try await client.create(APIResources.pods, pod("quiet"))
        for query in ["tailLines=nan", "tailLines=-1", "limitBytes=0", "limitBytes=1e9", "tailLines=99999999999999999999"] {
            let (code, body) = try await send(client, "GET", "/api/v1/namespaces/default/pods/quiet/log?\(query)")
            #expect(code == 400 && body.contains(String(query.prefix { $0 != "=" })), "\(query): \(code) \(body)")
        }
        #expect(try await alive(server, client))
    }

    /// Ctrl-C on `kubectl logs -f` of a pod that is printing: the client goes away while the
    /// server follows the file. It used to close the file under the follower, which then crashed
    /// the whole server reading it.
    @Test func clientsLeavingAFollowedLogEndOnlyTheirOwnRequest() async throws {
        let logs = NSTemporaryDirectory() + "kemu-logs-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: logs) }
        let server = try ServerProcess(insecure: true, arguments: ["--pod-logs", logs])
        defer { server.stop() }
        let client = try server.client()
        let created = try await client.create(APIResources.pods, pod("chatty"))
        let directory = "\(logs)/default_chatty_\(created.uid)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let file = "\(directory)/c.log"
        #expect(FileManager.default.createFile(atPath: file, contents: Data("line 0\n".utf8)))
        let writing = Task.detached {
            guard let handle = FileHandle(forWritingAtPath: file) else { return }
            handle.seekToEndOfFile()
            var n = 1
            while !Task.isCancelled {
                handle.write(Data("line \(n)\n".utf8))
                n += 1
                try? await Task.sleep(for: .milliseconds(5))
            }
        }
        defer { writing.cancel() }
        for round in 0..<12 {
            // Each follower is cut off at a different moment of its 100 ms polling.
            let seconds = String(format: "%.2f", 0.15 + Double(round) * 0.037)
            let curl = try ServerProcess.run("/usr/bin/curl", ["-s", "-N", "--max-time", seconds,
                                                               "\(client.server)/api/v1/namespaces/default/pods/chatty/log?follow=true"])
            #expect(curl.code == 28, "curl ends by its own timeout (the stream was still open): \(curl.code)")
            #expect(curl.out.hasPrefix("line 0\n"))
        }
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await alive(server, client), "the server survives clients that go away mid-stream")
    }
}
