import Foundation
import KemuSystem
import Testing

/// DaemonSets and CronJobs on a real cluster: a daemon pod Ready on every node, one more when a
/// node comes to match, a rolling restart node by node (`kubectl rollout status/undo ds`), a
/// drain that leaves daemon pods alone, a drain a PodDisruptionBudget holds back; and a CronJob
/// firing on the minute.
@Suite(.serialized, .enabled(if: isRoot, "creates network namespaces: run as root"))
struct DaemonSetRootTests {
    static let manifests = """
    apiVersion: batch/v1
    kind: CronJob
    metadata: {name: tick}
    spec:
      schedule: "* * * * *"
      jobTemplate:
        spec:
          template:
            spec:
              restartPolicy: Never
              containers: [{name: c, image: busybox, command: [sh, -c, 'echo tick from $HOSTNAME']}]
    ---
    apiVersion: apps/v1
    kind: DaemonSet
    metadata: {name: agent}
    spec:
      selector: {matchLabels: {app: agent}}
      template:
        metadata: {labels: {app: agent}}
        spec:
          containers:
          - name: echo
            image: kemu/echo
            ports: [{name: http, containerPort: 8080}]
            readinessProbe: {httpGet: {path: /readyz, port: http}, periodSeconds: 1}
    ---
    apiVersion: apps/v1
    kind: DaemonSet
    metadata: {name: edge}
    spec:
      selector: {matchLabels: {app: edge}}
      template:
        metadata: {labels: {app: edge}}
        spec:
          nodeSelector: {edge: "true"}
          containers: [{name: echo, image: kemu/echo}]
    """

    static let budgeted = """
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web}
    spec:
      replicas: 2
      selector: {matchLabels: {app: web}}
      template:
        metadata: {labels: {app: web}}
        spec:
          containers:
          - name: echo
            image: kemu/echo
            ports: [{name: http, containerPort: 8080}]
            readinessProbe: {httpGet: {path: /readyz, port: http}, periodSeconds: 1}
    ---
    apiVersion: policy/v1
    kind: PodDisruptionBudget
    metadata: {name: web}
    spec:
      minAvailable: 2
      selector: {matchLabels: {app: web}}
    """

    func placed(_ c: TestCluster, _ app: String) async throws -> [String] {
        try await c.jsonpath("pods", "{range .items[?(@.metadata.labels.app=='\(app)')]}{.spec.nodeName}={.status.phase} {end}")
            .split(separator: " ").map(String.init).sorted()
    }

    @Test func daemonPodsOnEveryNodeAndACronJobOnTheMinute() async throws {
        let c = TestCluster("rds")
        defer { c.release() }
        #expect(try await c.up().status == .exited(0))
        let applied = try await c.kubectl(["apply"], stdin: Self.manifests)
        #expect(applied.status == .exited(0), "\(applied.output)")

        let rolled = try await c.kubectl(["rollout", "status", "ds/agent", "--timeout=60s"])
        #expect(rolled.status == .exited(0) && rolled.output.contains("successfully rolled out"), "\(rolled.output)")
        #expect(try await placed(c, "agent") == ["node-1=Running", "node-2=Running"])
        #expect(try await c.jsonpath("ds/agent", "{.status.desiredNumberScheduled}/{.status.numberReady}/{.status.numberAvailable}") == "2/2/2")
        #expect(try await placed(c, "edge").isEmpty, "no node is an edge node yet")

        // A node that comes to match gets its pod.
        #expect(try await c.kubectl(["label", "node", "node-2", "edge=true"]).status == .exited(0))
        #expect(try await eventually(20) { try await placed(c, "edge") == ["node-2=Running"] })

        // A node added to the running cluster gets its daemon pod, reachable from the others;
        // removed, it takes its pods and its Node with it.
        let added = try await c.kemu(["node", "add", "node-3"])
        #expect(added.status == .exited(0) && added.output.contains("node node-3 is Ready"), "\(added.output)")
        #expect(try await eventually(30) { try await placed(c, "agent") == ["node-1=Running", "node-2=Running", "node-3=Running"] })
        #expect(try await c.kubectl(["rollout", "status", "ds/agent", "--timeout=60s"]).status == .exited(0))
        let newIP = try await c.jsonpath("pods", "{.items[?(@.spec.nodeName=='node-3')].status.podIP}")
        let reached = try await c.kemu(["curl", "--from", "node-1", "http://\(newIP):8080/"])
        #expect(reached.status == .exited(0), "\(newIP): \(reached.output)")
        #expect(try await c.kemu(["node", "add", "node-3"]).output.contains("node node-3 is already in cluster"))
        let process = pid_t(try await c.jsonpath("pods", "{.items[?(@.spec.nodeName=='node-3')].status.containerStatuses[0].containerID}")
            .replacingOccurrences(of: "kemu://", with: "")) ?? 0
        #expect(process > 0 && kill(process, 0) == 0)
        #expect(try await c.kemu(["node", "remove", "node-3"]).status == .exited(0))
        // Its pod's process went with it (it outlived its node, and its cluster, once).
        #expect(await eventually(5) { kill(process, 0) != 0 }, "pid \(process)")
        #expect(try await eventually(20) { try await placed(c, "agent") == ["node-1=Running", "node-2=Running"] })
        #expect(try await c.kubectl(["get", "node", "node-3"]).status != .exited(0))
        #expect(!NetworkNamespace("kemu-rds-node-3").exists)

        // A rolling restart goes node by node (maxUnavailable 1) and can be undone.
        #expect(try await c.kubectl(["rollout", "restart", "ds/agent"]).status == .exited(0))
        let restarted = try await c.kubectl(["rollout", "status", "ds/agent", "--timeout=60s"])
        #expect(restarted.status == .exited(0), "\(restarted.output)")
        let hashes = try await c.jsonpath("pods", "{range .items[?(@.metadata.labels.app=='agent')]}{.metadata.labels.controller-revision-hash} {end}")
        #expect(Set(hashes.split(separator: " ")).count == 1 && hashes.split(separator: " ").count == 2, "\(hashes)")
        #expect(try await c.kubectl(["rollout", "history", "ds/agent"]).output.contains("2         <none>"))
        #expect(try await c.kubectl(["rollout", "undo", "ds/agent"]).status == .exited(0))
        #expect(try await c.kubectl(["rollout", "status", "ds/agent", "--timeout=60s"]).status == .exited(0))

        // Drain leaves daemon pods where they are (they would only come back).
        let drain = try await c.kubectl(["drain", "node-1", "--ignore-daemonsets", "--timeout=60s"])
        #expect(drain.status == .exited(0), "\(drain.output)")
        #expect(try await placed(c, "agent").contains("node-1=Running"))
        #expect(try await c.kubectl(["uncordon", "node-1"]).status == .exited(0))

        // A budget holds a drain back (kubectl retries the 429s until its timeout) until it allows.
        #expect(try await c.kubectl(["cordon", "node-1"]).status == .exited(0))
        #expect(try await c.kubectl(["apply"], stdin: Self.budgeted).status == .exited(0))
        #expect(try await c.kubectl(["rollout", "status", "deploy/web", "--timeout=60s"]).status == .exited(0))
        #expect(try await c.kubectl(["uncordon", "node-1"]).status == .exited(0))
        #expect(try await eventually(10) { try await c.jsonpath("pdb/web", "{.status.currentHealthy}/{.status.disruptionsAllowed}") == "2/0" })
        let held = try await c.kubectl(["drain", "node-2", "--ignore-daemonsets", "--timeout=4s"])
        #expect(held.status != .exited(0) && held.output.contains("Cannot evict pod as it would violate the pod's disruption budget"), "\(held.output)")
        #expect(try await placed(c, "web") == ["node-2=Running", "node-2=Running"], "nothing was evicted")
        #expect(try await c.kubectl(["patch", "pdb", "web", "--type=merge", "-p", #"{"spec":{"minAvailable":1}}"#]).status == .exited(0))
        let drained = try await c.kubectl(["drain", "node-2", "--ignore-daemonsets", "--timeout=60s"])
        #expect(drained.status == .exited(0), "\(drained.output)")
        #expect(try await eventually(30) { try await placed(c, "web") == ["node-1=Running", "node-1=Running"] })
        #expect(try await c.kubectl(["uncordon", "node-2"]).status == .exited(0))

        // The CronJob fires each minute; a Job of it completes and its pod's output is there.
        // (The drains above evict finished pods too, so an early Job's pod may be gone: the
        // next minute's will do.)
        var pod = "", seen = ""
        _ = try await eventually(130) {
            seen = try await c.jsonpath("pods", "{range .items[*]}{.metadata.name}={.status.phase} {end}")
            pod = seen.split(separator: " ").first { $0.hasPrefix("tick-") && $0.hasSuffix("=Succeeded") }
                .map { String($0.dropLast("=Succeeded".count)) } ?? ""
            return !pod.isEmpty
        }
        #expect(!pod.isEmpty, "no pod of the CronJob's Jobs succeeded within 130 s: \(seen)")
        let job = try await c.jsonpath("pod/\(pod)", "{.metadata.labels.job-name}")
        #expect(job.hasPrefix("tick-") && pod.hasPrefix("\(job)-"), "\(job) / \(pod)")
        #expect(try await c.jsonpath("job/\(job)", "{.metadata.ownerReferences[0].kind}/{.metadata.annotations.batch\\.kubernetes\\.io/cronjob-scheduled-timestamp}").hasPrefix("CronJob/20"))
        #expect(try await c.kubectl(["logs", pod]).output == "tick from \(pod)\n")
        #expect(try await eventually(10) { try await c.jsonpath("cj/tick", "{.status.lastSuccessfulTime}") != "" })
    }
}
