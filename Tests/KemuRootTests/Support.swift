import Foundation
import Glibc
import KemuNetwork
import KemuSystem
import Synchronization
import Testing

let isRoot = getuid() == 0

/// Real TCP between namespaces: each socket is created inside its namespace on the namespace
/// thread ("switch, open, switch back") and then used from the test's own thread.
enum TCP {
    static func socketIn(_ namespace: String) throws -> Int32 {
        let fd = try NetworkNamespace(namespace).open()
        return try NamespaceThread.shared.run(in: fd) { try syscall("socket", namespace) { socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) } }
    }

    static func address(_ ip: String, _ port: UInt16) -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        inet_pton(AF_INET, ip, &a.sin_addr)
        return a
    }

    /// A listening socket inside `namespace` on ip:port.
    static func listen(in namespace: String, _ ip: String = "0.0.0.0", _ port: UInt16) throws -> Int32 {
        let fd = try socketIn(namespace)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var a = address(ip, port)
        _ = try withUnsafePointer(to: &a) { p in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                try syscall("bind", "\(ip):\(port) in \(namespace)") { bind(fd, sa, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        try syscall("listen", namespace) { Glibc.listen(fd, 16) }
        return fd
    }

    /// Connects from inside `namespace`; fails after `timeout` seconds.
    static func connect(from namespace: String, to ip: String, _ port: UInt16, timeout: Int = 2) throws -> Int32 {
        let fd = try socketIn(namespace)
        var tv = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var a = address(ip, port)
        do {
            _ = try withUnsafePointer(to: &a) { p in
                try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                    try syscall("connect", "\(ip):\(port) from \(namespace)") { Glibc.connect(fd, sa, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                }
            }
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    /// Accepts one connection; returns it and the peer's address.
    static func accept(_ listener: Int32) throws -> (Int32, String) {
        var peer = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let fd = try withUnsafeMutablePointer(to: &peer) { p in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                try syscall("accept") { Glibc.accept(listener, sa, &length) }
            }
        }
        var text = [CChar](repeating: 0, count: 16)
        inet_ntop(AF_INET, &peer.sin_addr, &text, 16)
        return (fd, String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }

    static func send(_ fd: Int32, _ text: String) throws {
        _ = try syscall("send") { Glibc.send(fd, text, text.utf8.count, Int32(MSG_NOSIGNAL)) }
    }

    static func receive(_ fd: Int32) throws -> String {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = try syscall("recv") { recv(fd, &buffer, buffer.count, 0) }
        return String(decoding: buffer[0..<n], as: UTF8.self)
    }

    /// One real exchange: client in `from` connects to ip:port served in `server`; the server reports
    /// the peer address it saw and the bytes it got, and answers. Returns (peer seen, reply).
    static func exchange(from: String, server: String, ip: String, port: UInt16) throws -> (peer: String, reply: String) {
        let listener = try listen(in: server, ip, port)
        defer { close(listener) }
        let client = try connect(from: from, to: ip, port)
        defer { close(client) }
        try send(client, "hello from \(from)")
        let (conn, peer) = try accept(listener)
        defer { close(conn) }
        let got = try receive(conn)
        try send(conn, "\(server) got '\(got)'")
        return (peer, try receive(client))
    }
}

/// Runs a command inside a namespace (as `ip netns exec` does) and returns its exit status and output.
func run(_ argv: [String], in namespace: String? = nil) throws -> (status: ProcessExit, output: String) {
    var fds: [Int32] = [0, 0]
    try syscall("pipe") { pipe(&fds) }
    for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    var options = Spawn.Options(namespace: namespace.map(NetworkNamespace.init))
    options.stdout = fds[1]
    options.stderr = fds[1]
    let pid: pid_t
    do { pid = try Spawn.spawn(argv, options) } catch { close(fds[0]); close(fds[1]); throw error }
    close(fds[1])
    let output = try FileDescriptor(adopting: fds[0], path: "pipe").readAll()
    return (try Spawn.wait(pid), String(decoding: output, as: UTF8.self))
}

/// The package root, to find configs/, netns-scripts/ and the built kemu binary.
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

func kemuBinary() throws -> String {
    for candidate in [".build/debug/kemu", ".build/x86_64-unknown-linux-gnu/debug/kemu"] {
        let path = "\(packageRoot)/\(candidate)"
        if FileSystem.exists(path) { return path }
    }
    throw KemuError(.notFound, "kemu binary not built: run swift build --build-tests")
}

/// A cluster of `nodes` nodes with its own name, up; remove it with `teardown`.
func upCluster(_ name: String, nodes: Int = 2) throws -> ClusterNetwork {
    _ = try? ClusterNetwork.teardown(cluster: name)  // a previous crashed run
    var config = ClusterConfig()
    config.name = name
    config.nodes = (1...nodes).map { "node-\($0)" }
    let network = try ClusterNetwork(config: config)
    try network.up()
    return network
}

func namespaces(of cluster: String) -> [String] {
    NetworkNamespace.list().filter { $0.hasPrefix("kemu-\(cluster)-") }
}

/// `run` off Swift's cooperative pool: the async tests that drive whole clusters wait on
/// processes for seconds, and blocking a cooperative thread that long starves every other
/// suite's tasks on a 2-core machine.
func runOff(_ argv: [String], in namespace: String? = nil) async throws -> (status: ProcessExit, output: String) {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(with: Result { try run(argv, in: namespace) }) }
    }
}

/// The `kemu down`s tests started as they ended, waited for when the test process exits.
enum PendingDowns {
    static let pids = Mutex<[pid_t]>([])
    static let waitAtExit: Void = { atexit { PendingDowns.waitAll() } }()

    static func start(_ argv: [String]) {
        _ = waitAtExit
        var options = Spawn.Options()
        let null = open("/dev/null", O_WRONLY | O_CLOEXEC)
        (options.stdout, options.stderr) = (null, null)
        defer { if null >= 0 { close(null) } }
        guard let pid = try? Spawn.spawn(argv, options) else {
            _ = try? run(argv)  // could not start it apart: down here and now
            return
        }
        pids.withLock { $0.append(pid) }
    }

    static func waitAll() {
        for pid in pids.withLock({ $0 }) { _ = try? Spawn.wait(pid) }
    }
}

/// A cluster a root test brings up with `kemu up` under its own name, driven with kubectl and
/// kemu as a user would, and removed with `release()` in the test's `defer`.
struct TestCluster {
    let name: String
    let kemu: String
    let cacheDir: String
    var kubeconfig: String { "/run/kemu/\(name)/apiserver/kubeconfig" }
    var state: String { "/run/kemu/\(name)" }

    init(_ name: String) {
        self.name = name
        kemu = (try? kemuBinary()) ?? "\(packageRoot)/.build/debug/kemu"
        cacheDir = NSTemporaryDirectory() + "kemu-\(name)-kubectl-\(UUID().uuidString)"
    }

    /// `kemu up` (with `config`, a cluster.yaml text, if given), after removing what a crashed
    /// earlier run left.
    func up(config: String? = nil) async throws -> (status: ProcessExit, output: String) {
        _ = try await runOff([kemu, "down", "--cluster", name])
        guard let config else { return try await runOff([kemu, "up", "--cluster", name]) }
        let file = cacheDir + "-cluster.yaml"
        try config.write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        return try await runOff([kemu, "up", "-f", file, "--cluster", name])
    }

    func down() {
        _ = try? run([kemu, "down", "--cluster", name])
        try? FileManager.default.removeItem(atPath: cacheDir)
    }

    /// `kemu down` at a test's end (its `defer`), not waited for here: the test process waits
    /// for it as it exits (`PendingDowns`). A `defer` runs on one of the cooperative threads
    /// every test shares — two on two cores — and a synchronous down held it for its length
    /// (~2 s), stalling other tests' checks meanwhile.
    func release() {
        PendingDowns.start([kemu, "down", "--cluster", name])
        try? FileManager.default.removeItem(atPath: cacheDir)
    }

    /// `kemu COMMAND --cluster NAME ARGS…` (`--cluster` after both words of `kemu stop node …`).
    func kemu(_ args: [String]) async throws -> (status: ProcessExit, output: String) {
        let words = ["stop", "start", "partition", "heal", "kill", "fault", "experiment", "net", "node", "policy", "mesh"].contains(args.first ?? "") ? 2 : 1
        return try await runOff([kemu] + args.prefix(words) + ["--cluster", name] + args.dropFirst(words))
    }

    func kubectl(_ args: [String], stdin: String? = nil) async throws -> (status: ProcessExit, output: String) {
        let argv = ["/usr/bin/kubectl", "--kubeconfig", kubeconfig, "--cache-dir", cacheDir] + args
        guard let stdin else { return try await runOff(argv) }
        let file = cacheDir + "-stdin.yaml"
        try stdin.write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        return try await runOff(argv + ["-f", file])
    }

    /// The daemons' warnings and errors (the last `count` lines of their logs), for a failed
    /// expectation's message: what the cluster itself saw go wrong.
    func warnings(_ count: Int = 30) -> String {
        let logs = (try? FileManager.default.contentsOfDirectory(atPath: state))?.filter { $0.hasSuffix(".log") }.sorted() ?? []
        return logs.flatMap { log in
            ((try? String(contentsOfFile: "\(state)/\(log)", encoding: .utf8)) ?? "").split(separator: "\n")
                .filter { $0.contains(" warning ") || $0.contains(" error ") }.suffix(count).map { "\(log): \($0)" }
        }.joined(separator: "\n")
    }

    func jsonpath(_ object: String, _ path: String) async throws -> String {
        try await kubectl(["get", object, "-o", "jsonpath=\(path)"]).output
    }

    /// The pid of a daemon `kemu up` started (`server`, `lb`, `node-NAME`).
    func daemonPID(_ daemon: String) throws -> pid_t {
        pid_t(try FileSystem.readFile("\(state)/\(daemon).pid").trimmingCharacters(in: .whitespacesAndNewlines))!
    }

    /// kill -9 of a daemon that is to stay down: its pid file goes first, as `kemu stop` does,
    /// so the supervisor leaves it alone (a daemon killed with its pid file in place is restarted).
    func killDaemon(_ daemon: String) throws {
        let pid = try daemonPID(daemon)
        try FileSystem.removeFile("\(state)/\(daemon).pid")
        kill(pid, SIGKILL)
    }

    /// Starts `kemu node` for `node` again (after a test killed it), detached as `kemu up` does
    /// (its proxy is a process of its own, left running), and records its pid where `kemu down`
    /// finds it.
    func restartAgent(_ node: String) throws -> pid_t {
        var options = Spawn.Options(namespace: NetworkNamespace("kemu-\(name)-\(node)"))
        options.privateMounts = false
        options.newSession = true
        let devNull = try FileDescriptor(opening: "/dev/null", flags: O_RDWR)
        (options.stdin, options.stdout, options.stderr) = (devNull.raw, devNull.raw, devNull.raw)
        let pid = try Spawn.spawn([kemu, "node", "--name", node, "--cluster", name, "--no-proxy", "--images", "\(packageRoot)/configs/images.yaml"], options)
        try FileSystem.writeFile("\(state)/node-\(node).pid", "\(pid)\n")
        return pid
    }
}

/// Polls until `check` holds or `seconds` pass; returns whether it held.
func eventually(_ seconds: Double = 10, _ check: () async throws -> Bool) async rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try await check() { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return try await check()
}
