import AsyncHTTPClient
import Foundation
import KemuAPI
import KemuClient
import KemuPKI
import NIOCore
import Synchronization
import Testing

// What the API, store, controller, client and integration tests share: a real `kemu server`
// process, raw requests through a client's TLS settings, and small fixtures.

/// A `kemu server` process on a free loopback port with its own data directory: https with the
/// certificates it makes, or plain http when `insecure`.
public final class ServerProcess: @unchecked Sendable {
    public let dataDir: String
    public let insecure: Bool
    public let cacheDir: String
    /// More `kemu server` arguments (such as `--pod-logs DIR`).
    public let extraArguments: [String]
    public private(set) var process: Process?
    public private(set) var kubeconfig: String
    /// The loopback port the server bound, read from the kubeconfig it wrote.
    public var port: Int {
        let text = (try? String(contentsOfFile: kubeconfig, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").first { $0.contains("server: http") }
            .flatMap { $0.split(separator: ":").last.flatMap { Int($0) } } ?? 0
    }

    public static var root: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    public init(insecure: Bool = false, arguments: [String] = []) throws {
        self.insecure = insecure
        extraArguments = arguments
        dataDir = NSTemporaryDirectory() + "kemu-api-\(UUID().uuidString)"
        cacheDir = dataDir + "-kubectl-cache"
        kubeconfig = dataDir + "/kubeconfig"
        try start()
    }

    /// Starts the server: on a free port, or on `port` (a restart where clients expect it).
    public func start(port: Int = 0) throws {
        try? FileManager.default.removeItem(atPath: kubeconfig)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "\(Self.root)/.build/debug/kemu")
        p.arguments = ["server", "--port", String(port), "--data-dir", dataDir, "--stop-with-parent"] + (insecure ? ["--insecure"] : []) + extraArguments
        // Its log, kept beside the data directory: quoted when it will not stop.
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = FileHandle(forWritingAtPath: logPath) ?? FileHandle.nullDevice
        log.seekToEndOfFile()
        p.standardOutput = log
        p.standardError = log
        try p.run()
        process = p
        let deadline = Date().addingTimeInterval(10)
        while !FileManager.default.fileExists(atPath: kubeconfig) {
            guard Date() < deadline, p.isRunning else { throw CocoaError(.fileNoSuchFile) }
            usleep(20_000)
        }
    }

    /// A client with the credentials of the kubeconfig the server wrote.
    public func client() throws -> APIClient { try APIClient(kubeconfig: Kubeconfig.load(path: kubeconfig)) }

    /// The server's kubeconfig with a certificate its CA signs for `user` in `groups` instead of
    /// the admin's: another identity, for authorization tests.
    public func kubeconfig(user: String, groups: [String] = []) throws -> Kubeconfig {
        let pair = try ClusterPKI.loadOrCreate(directory: dataDir + "/pki").ca.issueClient(user: user, groups: groups)
        var config = try Kubeconfig.load(path: kubeconfig)
        config.clientCertificatePEM = pair.certificatePEM
        config.clientKeyPEM = pair.privateKeyPEM
        config.token = nil
        config.user = user
        return config
    }

    /// The server's kubeconfig with only a bearer token for credentials (a ServiceAccount's).
    public func kubeconfig(token: String) throws -> Kubeconfig {
        var config = try Kubeconfig.load(path: kubeconfig)
        config.clientCertificatePEM = nil
        config.clientKeyPEM = nil
        config.token = token
        config.user = "token"
        return config
    }

    /// kill -9: no chance to flush or close anything.
    public func crash() {
        guard let p = process else { return }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        process = nil
    }

    public var logPath: String { dataDir + ".log" }

    /// SIGTERM, as `kemu down` will send it; returns whether the server exited within
    /// `seconds` (it is killed otherwise, so a test never hangs on it, after its threads'
    /// stacks are written to its log).
    @discardableResult
    public func terminate(within seconds: Double = 5) -> Bool {
        guard let p = process else { return true }
        process = nil
        guard p.isRunning else { return true }
        p.terminate()
        let deadline = Date().addingTimeInterval(seconds)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        if p.isRunning {
            let stacks = try? Self.run("/usr/bin/gdb", ["-p", String(p.processIdentifier), "-batch", "-ex", "thread apply all bt 25"])
            if let h = FileHandle(forWritingAtPath: logPath) {
                h.seekToEndOfFile()
                h.write(Data((stacks?.out ?? "").utf8))
            }
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            return false
        }
        return true
    }

    /// Stops the server and removes what it wrote. A server still running 10 s after SIGTERM is
    /// a failure, with the end of its log and its threads' stacks in the issue; 5 s on a loaded
    /// machine is only said.
    public func stop() {
        let asked = Date()
        if !terminate(within: 10) {
            let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            Issue.record("kemu server did not stop within 10 s of SIGTERM; its log and stacks:\n\(log.suffix(12_000))")
        } else if Date().timeIntervalSince(asked) > 5 {
            FileHandle.standardError.write(Data("note: kemu server \(dataDir) took \(Int(Date().timeIntervalSince(asked))) s to stop after SIGTERM\n".utf8))
        }
        try? FileManager.default.removeItem(atPath: dataDir)
        try? FileManager.default.removeItem(atPath: cacheDir)
        try? FileManager.default.removeItem(atPath: logPath)
    }

    /// Runs kubectl against this server; returns exit code and combined output.
    @discardableResult
    public func kubectl(_ args: [String], stdin: String? = nil) throws -> (code: Int32, out: String) {
        try run("/usr/bin/kubectl", ["--kubeconfig", kubeconfig, "--cache-dir", cacheDir] + args, stdin: stdin)
    }

    public func run(_ program: String, _ args: [String], stdin: String? = nil) throws -> (code: Int32, out: String) {
        try Self.run(program, args, stdin: stdin)
    }

    /// Runs a program to its end; returns exit code and combined output.
    public static func run(_ program: String, _ args: [String], stdin: String? = nil) throws -> (code: Int32, out: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: program)
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        let input = Pipe()
        p.standardInput = input
        try p.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

/// Any request through `client`'s TLS settings (and token), for bodies no typed call would send.
/// `authorization` is sent as the Authorization header as it is.
public func send(_ client: APIClient, _ method: String, _ path: String, body: [UInt8]? = nil, contentType: String = "application/json",
                 authorization: String? = nil) async throws -> (code: Int, body: String) {
    var request = HTTPClientRequest(url: client.server + path)
    request.method = .init(rawValue: method)
    request.tlsConfiguration = client.tls
    if let authorization { request.headers.add(name: "Authorization", value: authorization) }
    if let body {
        request.headers.add(name: "Content-Type", value: contentType)
        request.body = .bytes(ByteBuffer(bytes: body))
    }
    let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
    let data = try await response.body.collect(upTo: 1 << 20)
    return (Int(response.status.code), String(buffer: data))
}

public let haveKubectl = FileManager.default.isExecutableFile(atPath: "/usr/bin/kubectl")

public let replicaSet = """
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: echo
        image: kemu/echo
        ports: [{containerPort: 8080}]
"""

public func podManifest(tier: String) -> String {
    """
    apiVersion: v1
    kind: Pod
    metadata:
      name: solo
      labels: {app: solo, tier: \(tier)}
    spec:
      containers:
      - name: echo
        image: kemu/echo
    """
}
