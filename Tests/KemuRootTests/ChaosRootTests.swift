import Foundation
import Glibc
import KemuSystem
import Testing

/// The failover lab as a user drives it: chaos verbs, Faults, and `kemu experiment run` with the
/// report it writes, on a real cluster with real connections.
@Suite(.serialized, .enabled(if: isRoot, "creates network namespaces: run as root"))
struct ChaosRootTests {
    static let app = "\(packageRoot)/configs/experiments/web.yaml"

    /// An experiment's outcome: exit, what it printed, and report.json (parsed) if one was written.
    struct Outcome {
        var ok: Bool
        var output: String
        var report: [String: Any]
        var actions: [[String: Any]] { report["actions"] as? [[String: Any]] ?? [] }
        var loads: [[String: Any]] { report["loads"] as? [[String: Any]] ?? [] }
        func action(_ i: Int, _ key: String) -> Double? { (actions.count > i ? actions[i][key] : nil).flatMap { ($0 as? NSNumber)?.doubleValue } }
        func load(_ i: Int, _ key: String) -> Int { (loads.count > i ? loads[i][key] as? Int : nil) ?? -1 }
    }

    func experiment(_ c: TestCluster, _ yaml: String) async throws -> Outcome {
        let file = c.cacheDir + "-experiment.yaml", output = c.cacheDir + "-report"
        try yaml.write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file); try? FileManager.default.removeItem(atPath: output) }
        let run = try await runOff([c.kemu, "experiment", "run", "--cluster", c.name, "--output", output, file])
        let data = (try? Data(contentsOf: URL(fileURLWithPath: output + "/report.json"))) ?? Data("{}".utf8)
        let svg = (try? String(contentsOfFile: output + "/timeline.svg", encoding: .utf8)) ?? ""
        if run.status == .exited(0) { #expect(svg.hasPrefix("<svg") && svg.contains("</svg>"), "no timeline.svg") }
        return Outcome(ok: run.status == .exited(0), output: run.output.replacingOccurrences(of: file, with: "FILE"),
                       report: (try? JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:])
    }

    /// A process's state letter (R, S, T, Z…), nil when it is gone.
    func processState(_ pid: pid_t) -> String? {
        (try? FileSystem.readFile("/proc/\(pid)/stat"))?.split(separator: ")").last?.split(separator: " ").first.map(String.init)
    }

    func isRunning(_ pid: pid_t) -> Bool { processState(pid).map { $0 != "Z" } ?? false }

    func fabricLinkUp(_ c: TestCluster, _ node: String) async throws -> Bool {
        try await runOff(["ip", "-n", "kemu-\(c.name)-fabric", "link", "show", node]).output.contains("state UP")
    }

    @Test func failoverExperimentsKeepClientsWhole() async throws {
        let c = TestCluster("rchaos")
        defer { c.release() }
        // Pods are evicted 30 s after their node is NotReady, not 5: the crash below keeps node-2
        // down as long as a loaded machine takes over two `kemu` commands, and no pod should move.
        let up = try await c.up(config: "controlPlane: {podEvictionDelay: 30s}\n")
        #expect(up.status == .exited(0), "\(up.output)")

        // A crashed node and a frozen one, started again: the pods on them run on (containers
        // restarted after the crash), and each step is an Event on the node.
        #expect(try await c.kubectl(["apply", "-f", Self.app]).status == .exited(0))
        #expect(try await c.kubectl(["rollout", "status", "deploy/web", "--timeout=60s"]).status == .exited(0))
        let agent = try c.daemonPID("node-node-2")
        #expect(try await c.kemu(["stop", "node", "--mode", "freeze", "node-2"]).status == .exited(0))
        #expect(processState(agent) == "T")
        #expect(try await fabricLinkUp(c, "node-2") == false)
        let twice = try await c.kemu(["stop", "node", "node-2"])
        #expect(twice.status != .exited(0) && twice.output.contains("node node-2 is already stopped (freeze)"), "\(twice.output)")
        #expect(try await c.kemu(["start", "node", "node-2"]).status == .exited(0))
        #expect(processState(agent) == "S" || processState(agent) == "R")
        #expect(try await fabricLinkUp(c, "node-2"))
        let onNode2 = try await c.webPods().filter { $0.node == "node-2" }.map(\.name)
        #expect(try await c.kemu(["stop", "node", "node-2"]).status == .exited(0))
        #expect(!isRunning(agent))
        #expect(try await c.kemu(["start", "node", "node-2"]).status == .exited(0))
        var seen: [String: String] = [:]
        let restarted = try await eventually(45) {
            for pod in onNode2 {
                seen[pod] = try await c.jsonpath("pod/\(pod)", "{.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].ready}")
            }
            return seen.values.allSatisfy { $0 == "1 true" }
        }
        #expect(restarted, "pods on node-2 after the crash (restarts, ready): \(seen)")
        let reasons = try await c.kubectl(["get", "events", "--field-selector", "involvedObject.name=node-2,source=kemu-chaos", "-o", "jsonpath={.items[*].reason}"]).output
        #expect(reasons.split(separator: " ").sorted() == ["ChaosNodeStarted", "ChaosNodeStarted", "ChaosNodeStopped", "ChaosNodeStopped"], "\(reasons)")
        #expect(try await c.kubectl(["rollout", "status", "deploy/web", "--timeout=60s"]).status == .exited(0))

        // kill -9 of an endpoint, a rolling update, then 30 % of connections reset, under a
        // connect loop from a pod: no failure but the fault's, about 30 % of them, none after.
        let first = try await experiment(c, """
        name: kill-roll-abort
        apply: \(Self.app)
        duration: 17s
        load: {service: web, from: app=client, clients: 4, rate: 150, mode: connect, timeout: 2s}
        actions:
          - {at: 1s, kill-pod: {service: web}}
          - {at: 3s, rollout: web}
          - {at: 11s, fault: {name: resets, abort: 30}}
          - {at: 14s, remove-fault: resets}
        """)
        #expect(first.ok, "\(first.output)")
        #expect(first.action(0, "failed") == 0 && first.action(1, "failed") == 0, "\(first.output)")
        // Requests that started before the deleted Fault reached the proxies (milliseconds) may be
        // reset; errors must stop then (the bound is loose: make bench measures how fast).
        #expect((first.action(3, "errorsStoppedMs") ?? 9999) < 1000, "\(first.output)")
        let killed = first.action(0, "goneFromProxiesMs")
        #expect(killed != nil && killed! < 2000, "\(first.output)")
        // About 30 % of the requests that went out in the fault's 3 s (150 a second scheduled; a
        // loaded run's clients fall behind and catch up, so counted as sent, not as scheduled).
        let aborted = first.action(2, "failed") ?? 0, windowSent = first.action(2, "sent") ?? 0
        #expect(windowSent > 150 && aborted > windowSent * 0.2 && aborted < windowSent * 0.4, "\(windowSent) sent: \(first.output)")
        let resets = Int(aborted + (first.action(3, "failed") ?? 0))
        #expect((first.loads.first?["failures"] as? [String: Int]) == ["reset": resets], "\(first.output)")
        #expect(first.load(0, "sent") > 2000 && first.load(0, "failed") == resets)
        #expect(try await c.kubectl(["get", "faults"]).output.contains("No resources found"))

        // node-2 (hosting endpoints, not the client) cut off: no connection made after the cut
        // fails or waits more than one dial timeout (250 ms; a request in flight at the cut may
        // be lost), and node-1's proxy drops node-2's endpoints after the grace.
        let partition = try await experiment(c, """
        apply: \(Self.app)
        duration: 14s
        load: {service: web, from: app=client, clients: 4, rate: 100}
        actions:
          - {at: 1s, partition: node-2}
        """)
        // The requests that may be lost are those already on node-2 at the cut, at most one per
        // client (4): each times out (2 s), and is then also the slowest; every other waits at
        // most a dial timeout and a retry. (With 4 clients two were in flight there once in CI.)
        let lost = partition.action(0, "failed") ?? 9
        #expect(partition.ok && lost <= 4 && partition.load(0, "failed") <= 4, "\(partition.output)")
        // (1.5 s: a dial timeout and a retry with room for a loaded 2-core machine, still short of
        // the 2 s a request lost at the cut shows; 750 ms failed once with the full suite running.)
        #expect(lost >= 1 || (partition.action(0, "slowestRawMs") ?? 9999) < 1500, "from its send, no request waits more than a dial timeout and a retry: \(partition.output)")
        let gone = partition.action(0, "goneFromProxiesMs")
        #expect(gone != nil && gone! > 3000 && gone! < 9000, "\(partition.output)")
        #expect(partition.output.contains("undone at the end: partition node-2"))
        #expect(try await fabricLinkUp(c, "node-2"))
        #expect(try await c.kubectl(["rollout", "status", "deploy/web", "--timeout=60s"]).status == .exited(0))

        // The client pod's proxy stopped and started: refused meanwhile, served again.
        let restart = try await experiment(c, """
        duration: 10s
        load: {service: web, from: app=client, clients: 2, rate: 100}
        actions:
          - {at: 1s, stop-proxy: node-1}
          - {at: 3s, start-proxy: node-1}
        """)
        #expect(restart.ok, "\(restart.output)")
        #expect((restart.loads.first?["failures"] as? [String: Int])?.keys.sorted() == ["refused"], "\(restart.output)")
        // Refused while it is down (2 s of 100 a second): counted over both actions' windows, as
        // a loaded machine's generator sends part of the stop's share late, after the start
        // (88 and 166 once in a full suite run).
        let refused = (restart.action(0, "failed") ?? 0) + (restart.action(1, "failed") ?? 0)
        #expect(refused > 100, "\(restart.output)")
        // From the scheduled start: a process spawned, entering the node, installing its
        // nftables plumbing, listing, first sync (~130 ms idle, 250 ms with the cores busy; 2.2 s
        // and 3.8 s in CI beside the mesh suites' TLS load). What is asserted is that it comes
        // back: the experiment's last seconds are served whole.
        let stopped = restart.action(1, "errorsStoppedMs") ?? 9999
        #expect(stopped < 5000, "\(restart.output)")

        // Bad input names the line; a failed experiment undoes what it broke.
        let typo = try await experiment(c, "duration: 2s\nload: {service: web}\nactions:\n  - {at: 1s, partiton: node-2}\n")
        #expect(!typo.ok && typo.output.contains("FILE:4: unknown action \"partiton\" (did you mean partition?)"), "\(typo.output)")
        let past = try await experiment(c, "duration: 2s\nload: {service: web}\nactions:\n  - {at: -1s, heal: node-2}\n")
        #expect(!past.ok && past.output.contains("FILE:4: at -1s: a time in the past"), "\(past.output)")
        let crashed = try await experiment(c, """
        duration: 3s
        load: {service: web, from: client, via: cluster-ip}
        actions:
          - {at: 0s, partition: node-2}
          - {at: 0s, fault: {name: slow, latency: 10ms}}
          - {at: 1s, kill-pod: no-such-pod}
        """)
        #expect(!crashed.ok && crashed.output.contains("FILE:6: kill-pod no-such-pod: pod default/no-such-pod does not exist"), "\(crashed.output)")
        #expect(crashed.output.contains("undone: fault slow; partition node-2"), "\(crashed.output)")
        #expect(try await fabricLinkUp(c, "node-2"))
        #expect(try await c.kubectl(["get", "faults"]).output.contains("No resources found"))
        let contradictory = try await c.kubectl(["apply"], stdin: "apiVersion: kemu.dev/v1\nkind: Fault\nmetadata: {name: f}\nspec: {service: web, abort: {percent: 70}, hang: {percent: 40}}\n")
        #expect(contradictory.status != .exited(0) && contradictory.output.contains("spec.hang.percent"), "\(contradictory.output)")
        #expect(try await c.kubectl(["apply"], stdin: "apiVersion: kemu.dev/v1\nkind: Fault\nmetadata: {name: f}\nspec: {service: web, abort: {percent: 10}}\n").status == .exited(0))
        let overlap = try await c.kemu(["fault", "add", "g", "--service", "web", "--hang", "5", "--source", "client"])
        #expect(overlap.status != .exited(0) && overlap.output.contains("overlaps Fault \"f\""), "\(overlap.output)")
        #expect(try await c.kubectl(["delete", "fault", "f"]).status == .exited(0))
        let unknown = try await c.kemu(["partition", "node", "node-9"])
        #expect(unknown.status != .exited(0) && unknown.output.contains("node node-9 is not in cluster rchaos"), "\(unknown.output)")
    }
}
