import Foundation
import KemuAPI
import KemuStore
import KemuSystem

/// The control plane's numbers (issue 3): store writes per second (with its write-ahead log),
/// watch fan-out latency (one write, 100 watchers), and a `kemu server` holding 10,000 Services
/// and 50,000 endpoints: its RSS and how long listing every Service takes over HTTP.
enum APIBench {
    static func ms(_ ns: UInt64) -> Double { Double(ns) / 1e6 }
    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }
    static func percentile(_ sorted: [Double], _ p: Double) -> Double { sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }

    static func service(_ i: Int) -> JSON {
        var s: JSON = ["apiVersion": "v1", "kind": "Service"]
        s.name = "svc-\(i)"
        s.namespace = "default"
        s.labels = ["app": "app-\(i % 100)"]
        s["spec"] = ["type": "ClusterIP", "clusterIP": .string("10.96.\(i / 250 + 1).\(i % 250 + 2)"),
                     "selector": ["app": .string("app-\(i)")],
                     "ports": [["name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080]]]
        return s
    }

    static func slice(_ i: Int) -> JSON {
        var e: JSON = ["apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4"]
        e.name = "svc-\(i)-abcde"
        e.namespace = "default"
        e.labels = ["kubernetes.io/service-name": "svc-\(i)"]
        e["ports"] = [["name": "http", "port": 8080, "protocol": "TCP"]]
        e["endpoints"] = .array((0..<5).map { k in
            ["addresses": [.string("10.244.\(k + 1).\(i % 250 + 2)")], "conditions": ["ready": true, "serving": true, "terminating": false],
             "nodeName": .string("node-\(k + 1)")]
        })
        return e
    }

    static func run(root: String) async throws {
        let dir = NSTemporaryDirectory() + "kemu-apibench-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }

        // Writes per second, each logged before it is acknowledged: --sync batch (the default) and
        // --sync always (an fdatasync per write) on the same disk.
        func writesPerSecond(_ sync: SyncPolicy, _ writes: Int) throws -> Double {
            let store = try Store(directory: dir + "/writes-\(sync.rawValue)", sync: sync)
            let t0 = now()
            for i in 0..<writes { try store.create("services", service(i)) }
            return Double(writes) / (ms(now() - t0) / 1000)
        }
        let writeRate = try writesPerSecond(.batch, 20_000)
        let syncedRate = try writesPerSecond(.always, 2_000)

        // Watch fan-out: one write, 100 watchers; time until the last one has it.
        let fanout = Store()
        let watchers = 100, rounds = 300
        let streams = try (0..<watchers).map { _ in try fanout.watch(WatchFilter("pods")) }
        let received = ManagedCounter()
        let tasks = streams.map { stream in
            Task { for try await _ in stream { received.increment() } }
        }
        var latencies: [Double] = []
        for r in 0..<rounds {
            let target = (r + 1) * watchers
            let start = now()
            var p: JSON = ["apiVersion": "v1", "kind": "Pod"]
            p.name = "p\(r)"
            p.namespace = "default"
            try fanout.create("pods", p)
            while received.value < target { await Task.yield() }
            latencies.append(ms(now() - start))
        }
        tasks.forEach { $0.cancel() }
        latencies.sort()

        // 10,000 Services + 10,000 EndpointSlices of 5 endpoints, served by a real kemu server.
        do {
            let big = try Store(directory: dir + "/big")
            for i in 0..<10_000 {
                try big.create("services", service(i))
                try big.create("endpointslices.discovery.k8s.io", slice(i))
            }
        }
        // The same objects for the heartbeat runs, which start servers of their own.
        try FileManager.default.copyItem(atPath: dir + "/big", toPath: dir + "/beats")
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "\(root)/.build/release/kemu")
        server.arguments = ["server", "--port", "0", "--data-dir", dir + "/big"]
        server.standardOutput = FileHandle.nullDevice
        server.standardError = FileHandle.nullDevice
        let startServer = now()
        try server.run()
        defer { server.terminate(); server.waitUntilExit() }
        while !FileManager.default.fileExists(atPath: dir + "/big/kubeconfig") { usleep(10_000) }
        let startup = ms(now() - startServer)
        let kubeconfig = try String(contentsOfFile: dir + "/big/kubeconfig", encoding: .utf8)
        let url = kubeconfig.split(separator: "\n").first { $0.contains("server:") }!.split(separator: " ").last!
        var listTimes: [Double] = []
        var bytes = 0
        for _ in 0..<7 {
            let (time, size) = try curl("\(url)/api/v1/services", pki: dir + "/big/pki")
            listTimes.append(time * 1000)
            bytes = size
        }
        listTimes.sort()
        guard bytes > 1 << 20 else { throw KemuError(.invalidState, "listing 10,000 Services returned only \(bytes) bytes: refused?") }
        let rssKB = (try? FileSystem.readFile("/proc/\(server.processIdentifier)/status"))?
            .split(separator: "\n").first { $0.hasPrefix("VmRSS:") }?
            .split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) } ?? 0

        let withLanes = try await heartbeats(root: root, dataDir: dir + "/beats", lanes: true)
        let withoutLanes = try await heartbeats(root: root, dataDir: dir + "/beats", lanes: false)
        let beat = { (h: Heartbeats) in String(format: "%.1f / %.1f / %.0f ms (%d lists served)", h.p50, h.p99, h.worst, h.lists) }

        let table = """
        ## Control plane (store and API server)

        | what | measured | target |
        |---|---|---|
        | store writes/s, --sync batch (write(2) before ack, fdatasync ≤ 1/s) | \(String(format: "%.0f", writeRate)) | |
        | store writes/s, --sync always (fdatasync before ack) | \(String(format: "%.0f", syncedRate)) (\(String(format: "%.1f", writeRate / max(syncedRate, 1)))× slower) | |
        | one write seen by 100 watchers (store, in process), p50 / p99 | \(String(format: "%.2f / %.2f ms", percentile(latencies, 0.5), percentile(latencies, 0.99))) | p99 < 10 ms |
        | list 10,000 Services over https with a client certificate (\(bytes / 1024) KiB, new connection each), median / worst of 7 | \(String(format: "%.0f / %.0f ms", listTimes[3], listTimes[6])) | < 200 ms |
        | kemu server RSS with 10k Services + 50k endpoints | \(rssKB / 1024) MiB | |
        | kemu server start (load 20k objects) until serving | \(String(format: "%.0f ms", startup)) | |
        | node status patch while 12 clients list 10k Services in a loop, p50 / p99 / worst: priority lanes | \(beat(withLanes)) | |
        | the same without lanes (--no-priority-lanes) | \(beat(withoutLanes)) | |

        """
        print(table)
        try FileSystem.makeDirectories("\(root)/bench-results")
        try FileSystem.writeFile("\(root)/bench-results/api.md", table)
    }

    /// GET with curl as kemu-admin (the certificates `kemu server` made); returns seconds and bytes.
    static func curl(_ url: String, pki: String) throws -> (Double, Int) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        p.arguments = ["-s", "-o", "/dev/null", "-w", "%{time_total} %{size_download}",
                       "--cacert", "\(pki)/ca.crt", "--cert", "\(pki)/admin.crt", "--key", "\(pki)/admin.key", url]
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        let parts = out.split(separator: " ")
        return (Double(parts.first ?? "0") ?? 0, Int(parts.last ?? "0") ?? 0)
    }
}

final class ManagedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() { lock.lock(); count += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
}
