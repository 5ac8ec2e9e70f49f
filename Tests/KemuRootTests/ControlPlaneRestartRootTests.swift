import Foundation
import Glibc
import KemuSystem
import Testing

/// A control-plane outage is not a node failure (issue 16, item 11): the API server killed with
/// -9 under load, Services keep answering on what the proxies last knew, the lab still works
/// without it, and once it is back no node is judged NotReady and no pod moves.
@Suite(.serialized, .enabled(if: isRoot, "creates network namespaces: run as root"))
struct ControlPlaneRestartRootTests {
    @Test func theClusterRidesOutAnAPIServerCrash() async throws {
        let c = TestCluster("rcprestart")
        defer { c.release() }
        let up = try await c.up()
        try #require(up.status == .exited(0), "\(up.output)")
        #expect(try await c.kubectl(["apply", "-f", "\(packageRoot)/configs/experiments/web.yaml"]).status == .exited(0))
        for deployment in ["web", "client"] {
            #expect(try await c.kubectl(["rollout", "status", "deploy/\(deployment)", "--timeout=60s"]).status == .exited(0))
        }
        let clusterIP = try await c.jsonpath("svc/web", "{.spec.clusterIP}")
        let client = try await c.jsonpath("pods", "{.items[?(@.metadata.labels.app=='client')].metadata.name}")
        let webPods = try await c.jsonpath("pods", "{.items[?(@.metadata.labels.app=='web')].metadata.name}").split(separator: " ").map(String.init)
        try #require(webPods.count == 3 && !client.isEmpty)

        // 14 s of requests to the ClusterIP from the client pod, across the whole outage.
        async let traffic = c.requests(from: client, to: clusterIP, 80, count: 0, environment: ["DURATION=14"])
        try await Task.sleep(for: .seconds(2))
        let stop = try await c.kemu(["stop", "server", "--signal", "KILL"])
        #expect(stop.status == .exited(0), "\(stop.output)")
        #expect(try await c.kubectl(["get", "nodes", "--request-timeout=2s"]).status != .exited(0), "the API server still answers")
        // The lab acts on the node, not through the API.
        let kill = try await c.kemu(["kill", "pod", webPods[0]])
        #expect(kill.status == .exited(0) && kill.output.contains("container echo"), "\(kill.output)")
        // Longer than the node grace period (5 s) the lifecycle controller would apply.
        try await Task.sleep(for: .seconds(7))
        let start = try await c.kemu(["start", "server"])
        #expect(start.status == .exited(0), "\(start.output)")
        let started = Date()
        let ready = try await eventually(15) {
            try await c.jsonpath("nodes", "{.items[*].status.conditions[?(@.type=='Ready')].status}") == "True True"
        }
        #expect(ready, "nodes not Ready again within 15 s")
        let result = try await traffic
        #expect(result.failures.isEmpty, "\(result.failures.prefix(3)) of \(result.counts)")
        // Requests went on through the outage: never 3 s without an answer. (How many is the
        // machine's business: 50 a second at most, 289 in the 14 s on a loaded CI, 10 a second
        // on a more loaded one.)
        #expect(result.gap < 3 && result.counts.values.reduce(0, +) > 28, "\(result.gap) s without an answer; \(result.counts)")

        // No node was judged while the server was away: the same pods, none evicted.
        try await Task.sleep(for: .seconds(max(0, 6 - Date().timeIntervalSince(started))))
        let after = try await c.jsonpath("pods", "{.items[?(@.metadata.labels.app=='web')].metadata.name}").split(separator: " ").map(String.init)
        #expect(after.sorted() == webPods.sorted(), "pods moved: \(webPods) → \(after)")
        let evictions = try await c.kubectl(["get", "events", "-A", "--field-selector", "reason=TaintManagerEviction", "-o", "name"]).output
        #expect(evictions.isEmpty, "\(evictions)")
        let unknown = try await c.kubectl(["get", "events", "-A", "--field-selector", "reason=NodeNotReady", "-o", "name"]).output
        #expect(unknown.isEmpty, "\(unknown)")
        #expect(try await c.kubectl(["get", "events", "-A", "--field-selector", "reason=ChaosAPIServerStarted", "-o", "name"]).output.contains("event/"))

        // kill -9 under load, nobody starting it: the supervisor does, and no request fails.
        let server = try c.daemonPID("server")
        async let more = c.requests(from: client, to: clusterIP, 80, count: 0, environment: ["DURATION=6"])
        try await Task.sleep(for: .seconds(1))
        Glibc.kill(server, SIGKILL)
        let back = try await eventually(20) {
            let restarted = (try? c.daemonPID("server")).map { $0 != server && Glibc.kill($0, 0) == 0 } == true
            guard restarted else { return false }
            return try await c.kubectl(["get", "nodes", "--request-timeout=2s"]).status == .exited(0)
        }
        #expect(back, "the API server did not come back by itself")
        let during = try await more
        #expect(during.failures.isEmpty && during.gap < 3 && during.counts.values.reduce(0, +) > 12,
                "\(during.failures.prefix(3)) of \(during.counts), \(during.gap) s without an answer")

        // A Service made afterwards is served.
        #expect(try await c.kubectl(["expose", "deploy/web", "--name", "web-again", "--port", "81", "--target-port", "8080"]).status == .exited(0))
        let again = try await c.jsonpath("svc/web-again", "{.spec.clusterIP}")
        #expect(try await eventually(10) {
            try await c.kemu(["curl", "--from", client, "http://\(again):81/?format=text"]).output.contains("pod=web-")
        })
    }

    /// Rows of `kemu status`'s daemon table: name → [pid, state…, restarts, last restart].
    func daemons(_ c: TestCluster) async throws -> [String: String] {
        let status = try await c.kemu(["status"]).output
        var rows: [String: String] = [:]
        for line in status.split(separator: "\n") {
            let columns = line.split(separator: " ", maxSplits: 1).map(String.init)
            if columns.count == 2 { rows[columns[0]] = columns[1].trimmingCharacters(in: .whitespaces) }
        }
        return rows
    }

    @Test func theSupervisorRestartsWhatCrashesAndShowsACrashLoop() async throws {
        let c = TestCluster("rsupervise")
        defer { c.release() }
        let up = try await c.up()
        try #require(up.status == .exited(0), "\(up.output)")
        // kill -9 of a proxy: back within seconds, as a new process.
        let proxy = try c.daemonPID("proxy-node-1")
        kill(proxy, SIGKILL)
        #expect(await eventually(10) { (try? c.daemonPID("proxy-node-1")).map { $0 != proxy && kill($0, 0) == 0 } ?? false })
        #expect(try await daemons(c)["proxy-node-1"]?.contains("running") == true)

        // A load balancer that cannot start (its kubeconfig broken) is a crash loop, shown as such;
        // repaired, it runs again after its back-off.
        let kubeconfig = "\(c.state)/nodes/lb.kubeconfig"
        let good = try FileSystem.readFile(kubeconfig)
        try FileSystem.writeFile(kubeconfig, "not: [a kubeconfig", mode: 0o600)
        kill(try c.daemonPID("lb"), SIGKILL)
        let looping = try await eventually(20) { try await daemons(c)["lb"]?.contains("crash-loop") == true }
        let whileLooping = try await daemons(c)
        #expect(looping, "\(whileLooping)")
        try FileSystem.writeFile(kubeconfig, good, mode: 0o600)
        let repaired = try await eventually(40) { try await daemons(c)["lb"]?.contains("running") == true }
        let afterRepair = try await daemons(c)
        #expect(repaired, "\(afterRepair)")

        // What kemu stop stops stays stopped.
        #expect(try await c.kemu(["stop", "proxy", "node-2"]).status == .exited(0))
        try await Task.sleep(for: .seconds(2))
        #expect(try await daemons(c)["proxy-node-2"]?.hasPrefix("-") == true)
        #expect(try await c.kemu(["stop", "server"]).status == .exited(0))
        try await Task.sleep(for: .seconds(2))
        let down = try await c.kemu(["status"])
        #expect(down.output.contains("the API server does not answer"), "\(down.output)")
        #expect(try await c.kemu(["start", "server"]).status == .exited(0))
        #expect(try await c.kemu(["start", "proxy", "node-2"]).status == .exited(0))
        #expect(try await daemons(c)["server"]?.contains("running") == true)
    }
}
