import Foundation
import KemuAPI
import KemuClient
import KemuPKI
import KemuSystem

/// Node heartbeats while another client floods the server with lists of 10,000 Services: the
/// latency a node agent's status update sees, with the priority lanes (the agent has a lane of
/// its own) and without them (`--no-priority-lanes`), in the same run.
extension APIBench {
    struct Heartbeats {
        var p50: Double, p99: Double, worst: Double, lists: Int
    }

    static func heartbeats(root: String, dataDir: String, lanes: Bool, flooders: Int = 12, seconds: Double = 8) async throws -> Heartbeats {
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "\(root)/.build/release/kemu")
        server.arguments = ["server", "--port", "0", "--data-dir", dataDir] + (lanes ? [] : ["--no-priority-lanes"])
        server.standardOutput = FileHandle.nullDevice
        server.standardError = FileHandle.nullDevice
        try? FileManager.default.removeItem(atPath: dataDir + "/kubeconfig")
        try server.run()
        defer { server.terminate(); server.waitUntilExit() }
        while !FileManager.default.fileExists(atPath: dataDir + "/kubeconfig") { usleep(10_000) }
        let admin = try Kubeconfig.load(path: dataDir + "/kubeconfig")
        let pki = try ClusterPKI.loadOrCreate(directory: dataDir + "/pki")
        let pair = try pki.ca.issueClient(user: "system:node:bench", groups: ["system:nodes"])
        var nodeConfig = admin
        nodeConfig.clientCertificatePEM = pair.certificatePEM
        nodeConfig.clientKeyPEM = pair.privateKeyPEM
        let node = try APIClient(kubeconfig: nodeConfig)
        var object: JSON = ["apiVersion": "v1", "kind": "Node"]
        object.name = "bench"
        if (try? await node.get(APIResources.nodes, name: "bench")) == nil { _ = try await node.create(APIResources.nodes, object) }

        // The flood: curl loops listing every Service as the admin (each a few MiB).
        let url = "\(admin.server)/api/v1/services"
        let loop = "while :; do curl -s -o /dev/null --cacert \(dataDir)/pki/ca.crt --cert \(dataDir)/pki/admin.crt --key \(dataDir)/pki/admin.key \(url) && echo; done"
        let flood = try (0..<flooders).map { _ in
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/sh")
            p.arguments = ["-c", loop]
            let pipe = Pipe()
            p.standardOutput = pipe
            try p.run()
            return (p, pipe)
        }
        try await Task.sleep(for: .seconds(1))
        // The heartbeats: a status patch every 100 ms, as an agent posts on change.
        var latencies: [Double] = []
        let end = Date().addingTimeInterval(seconds)
        var beat = 0
        while Date() < end {
            beat += 1
            let start = now()
            _ = try await node.patch(APIResources.nodes, name: "bench", ["status": ["conditions": [[
                "type": "Ready", "status": "True", "reason": "KubeletReady", "message": .string("beat \(beat)")]]]], subresource: "status")
            latencies.append(ms(now() - start))
            try await Task.sleep(for: .milliseconds(100))
        }
        var lists = 0
        for (p, pipe) in flood {
            p.terminate()
            p.waitUntilExit()
            lists += pipe.fileHandleForReading.readDataToEndOfFile().filter { $0 == 0x0A }.count
        }
        latencies.sort()
        return Heartbeats(p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99), worst: latencies.last ?? 0, lists: lists)
    }
}
