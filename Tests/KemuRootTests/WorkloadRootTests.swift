import Foundation
import Glibc
import KemuSystem
import Testing

/// Deployments, StatefulSets and node failure as a kubectl user drives them, on real clusters.
@Suite(.serialized, .enabled(if: isRoot, "creates network namespaces: run as root"))
struct WorkloadRootTests {
    static let deployment = """
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web}
    spec:
      replicas: 4
      minReadySeconds: 1
      selector: {matchLabels: {app: web}}
      strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 1}}
      template:
        metadata: {labels: {app: web}}
        spec:
          containers:
          - name: echo
            image: kemu/echo
            ports: [{name: http, containerPort: 8080}]
            readinessProbe: {httpGet: {path: /readyz, port: http}, periodSeconds: 1}
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: web}
    spec:
      selector: {app: web}
      ports: [{port: 80, targetPort: http}]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: tester}
    spec:
      nodeSelector: {kubernetes.io/hostname: node-1}
      containers: [{name: c, image: pause}]
    """

    /// Names of the ReplicaSets, by revision.
    func revisions(_ c: TestCluster) async throws -> [String: String] {
        let text = try await c.jsonpath("rs", "{range .items[*]}{.metadata.annotations.deployment\\.kubernetes\\.io/revision}={.metadata.name} {end}")
        return Dictionary(text.split(separator: " ").map { $0.split(separator: "=").map(String.init) }.filter { $0.count == 2 }.map { ($0[0], $0[1]) },
                          uniquingKeysWith: { a, _ in a })
    }

    @Test func deploymentsRollOutWithoutDowntimeRollBackPauseAndSurviveANodeDying() async throws {
        let c = TestCluster("rdeploy")
        defer { c.release() }
        let up = try await c.up()
        #expect(up.status == .exited(0), "\(up.output)")
        #expect(try await c.kubectl(["apply"], stdin: Self.deployment).status == .exited(0))
        let first = try await c.kubectl(["rollout", "status", "deploy/web", "--timeout=60s"])
        #expect(first.output.contains("successfully rolled out"), "\(first.output)")
        let v1 = try await revisions(c)
        #expect(v1.count == 1 && v1["1"]?.hasPrefix("web-") == true)
        let pods = try await c.webPods()
        #expect(pods.count == 4 && pods.allSatisfy { $0.name.hasPrefix(v1["1"]! + "-") })
        #expect(try await c.readyEndpoints("web", 4))
        let clusterIP = try await c.jsonpath("svc/web", "{.spec.clusterIP}")

        #expect(try await c.kubectl(["wait", "--for=condition=Ready", "pod/tester", "--timeout=30s"]).status == .exited(0))
        // A new image, with clients connecting all along: every request is answered. (Each new
        // pod counts after 1 s Ready, minReadySeconds, so the rollout takes a few seconds; the
        // clients, a request every 20 ms, go on until only new pods have answered for a second,
        // 90 s at most, so they span it however slowly pods start on a loaded machine.)
        async let traffic = c.requests(from: "tester", to: clusterIP, 80, count: 0, environment: ["DURATION=90", "UNTIL_REPLACED=1"])
        try await Task.sleep(for: .milliseconds(500))
        #expect(try await c.kubectl(["set", "image", "deploy/web", "echo=kemu/echo:v2"]).status == .exited(0))
        let rolled = try await c.kubectl(["rollout", "status", "deploy/web", "--timeout=60s"])
        let during = try await traffic
        #expect(rolled.output.contains("successfully rolled out"), "\(rolled.output)")
        #expect(during.failures.count == 0, "\(during.failures.prefix(3))")
        // It ends early only after 50 answers in a row from new pods, so more than 50 were answered
        // (how many more depends on the machine's load: 98 in 8 s on a loaded CI run).
        #expect(during.counts.values.reduce(0, +) > 50, "\(during.counts)")
        let v2 = try await revisions(c)
        #expect(v2.count == 2 && v2["2"] != nil && v2["2"] != v1["1"])
        // The traffic spanned the rollout: old pods and new ones answered it.
        #expect(during.counts.keys.contains { $0.hasPrefix(v1["1"]! + "-") } && during.counts.keys.contains { $0.hasPrefix((v2["2"] ?? "?") + "-") },
                "\(during.counts)")
        #expect(try await c.jsonpath("deploy/web", "{.metadata.annotations.deployment\\.kubernetes\\.io/revision} {.status.updatedReplicas} {.status.availableReplicas}") == "2 4 4")
        #expect(try await c.webPods().allSatisfy { $0.name.hasPrefix(v2["2"]! + "-") })

        // Undo: the first ReplicaSet comes back as revision 3; an unknown revision is an error.
        #expect(try await c.kubectl(["rollout", "undo", "deploy/web"]).status == .exited(0))
        #expect(try await c.kubectl(["rollout", "status", "deploy/web", "--timeout=60s"]).output.contains("successfully rolled out"))
        let v3 = try await revisions(c)
        #expect(v3["3"] == v1["1"] && v3["2"] == v2["2"] && v3["1"] == nil)
        let history = try await c.kubectl(["rollout", "history", "deploy/web"]).output
        #expect(history.contains("\n2 ") && history.contains("\n3 ") && !history.contains("\n1 "), "\(history)")
        let missing = try await c.kubectl(["rollout", "undo", "deploy/web", "--to-revision=42"])
        #expect(missing.status != .exited(0) && missing.output.contains("unable to find specified revision 42"))

        // Paused: a new image makes no new pods; resumed, it rolls out.
        #expect(try await c.kubectl(["rollout", "pause", "deploy/web"]).status == .exited(0))
        #expect(try await c.kubectl(["set", "image", "deploy/web", "echo=kemu/echo:v4"]).status == .exited(0))
        try await Task.sleep(for: .seconds(2))
        #expect(try await revisions(c).count == 2)
        #expect(try await c.webPods().allSatisfy { $0.name.hasPrefix(v1["1"]! + "-") })
        #expect(try await c.jsonpath("deploy/web", "{.status.conditions[?(@.type==\"Progressing\")].reason}") == "DeploymentPaused")
        #expect(try await c.kubectl(["rollout", "resume", "deploy/web"]).status == .exited(0))
        #expect(try await c.kubectl(["rollout", "status", "deploy/web", "--timeout=60s"]).output.contains("successfully rolled out"))
        #expect(try await revisions(c)["4"] != nil)

        // Both maxSurge and maxUnavailable 0 is refused, naming the field.
        let bad = try await c.kubectl(["patch", "deploy/web", "--type=merge", "-p",
                                       #"{"spec":{"strategy":{"rollingUpdate":{"maxSurge":0,"maxUnavailable":0}}}}"#])
        #expect(bad.status != .exited(0) && bad.output.contains("spec.strategy.rollingUpdate.maxUnavailable"), "\(bad.output)")

        // node-2's agent dies: the node goes NotReady and its pods come back on node-1.
        try c.killDaemon("node-node-2")
        let moved = try await eventually(40) {
            let now = try await c.webPods()
            return now.count == 4 && now.allSatisfy { $0.node == "node-1" }
        }
        #expect(moved)
        #expect(try await c.readyEndpoints("web", 4))
        #expect(try await c.jsonpath("node/node-2", "{.status.conditions[?(@.type==\"Ready\")].status}") == "Unknown")
        let events = try await c.kubectl(["get", "events", "--field-selector", "reason=TaintManagerEviction", "-o", "name"]).output
        #expect(!events.isEmpty)
        // It comes back: Ready, untainted; then cordon node-1 and drain it: the pods go to node-2.
        _ = try c.restartAgent("node-2")
        #expect(try await eventually(10) { try await c.jsonpath("node/node-2", "{.status.conditions[?(@.type==\"Ready\")].status}{.spec.taints}") == "True" })
        let drain = try await c.kubectl(["drain", "node-1", "--ignore-daemonsets", "--force", "--timeout=60s"])
        #expect(drain.status == .exited(0), "\(drain.output)")
        #expect(try await c.jsonpath("node/node-1", "{.spec.unschedulable}") == "true")
        let drained = try await eventually(30) {
            let now = try await c.webPods()
            return now.count == 4 && now.allSatisfy { $0.node == "node-2" }
        }
        #expect(drained)
        #expect(try await c.kubectl(["uncordon", "node-1"]).status == .exited(0))
        #expect(try await c.jsonpath("node/node-1", "{.spec.unschedulable}") == "")
    }

    static let statefulSet = """
    apiVersion: v1
    kind: Service
    metadata: {name: db}
    spec:
      clusterIP: None
      selector: {app: db}
      ports: [{name: http, port: 8080}]
    ---
    apiVersion: apps/v1
    kind: StatefulSet
    metadata: {name: db}
    spec:
      serviceName: db
      replicas: 3
      selector: {matchLabels: {app: db}}
      template:
        metadata: {labels: {app: db}}
        spec:
          containers:
          - name: echo
            image: kemu/echo
            args: [--journal, journal]
            ports: [{name: http, containerPort: 8080}]
            readinessProbe: {httpGet: {path: /readyz, port: http}, periodSeconds: 1}
            volumeMounts: [{name: data, mountPath: /data}]
      volumeClaimTemplates:
      - metadata: {name: data}
        spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
    ---
    apiVersion: v1
    kind: ReplicationController
    metadata: {name: solo}
    spec:
      replicas: 1
      template:
        metadata: {labels: {app: solo}}
        spec:
          containers: [{name: echo, image: kemu/echo}]
    """

    @Test func statefulSetsKeepNamesOrderAndDataAndKeptDataSurvivesDownAndUp() async throws {
        let c = TestCluster("rsts")
        let data = NSTemporaryDirectory() + "kemu-rsts-data-\(UUID().uuidString)"
        defer {
            c.down()
            try? FileManager.default.removeItem(atPath: data)
        }
        _ = try await c.kemu(["down"])
        let up = try await c.kemu(["up", "--data-dir", data])
        #expect(up.status == .exited(0), "\(up.output)")
        #expect(try await c.kubectl(["apply"], stdin: Self.statefulSet).status == .exited(0))
        let rolled = try await c.kubectl(["rollout", "status", "sts/db", "--timeout=60s"])
        #expect(rolled.status == .exited(0), "\(rolled.output)")

        // Ordered: each ordinal was created once the one before was Ready.
        let times = try await c.jsonpath("pods", "{range .items[?(@.metadata.labels.app=='db')]}{.metadata.name}={.metadata.creationTimestamp}={.status.conditions[?(@.type==\"Ready\")].lastTransitionTime} {end}")
        let rows = times.split(separator: " ").map { $0.split(separator: "=").map(String.init) }.sorted { $0[0] < $1[0] }
        #expect(rows.map { $0[0] } == ["db-0", "db-1", "db-2"])
        if rows.count == 3 { #expect(rows[0][2] <= rows[1][1] && rows[1][2] <= rows[2][1], "\(rows)") }

        // Stable DNS names through the headless Service; the journal lives in the claim.
        let journal = { (pod: String) in try await c.kemu(["curl", "--from", "db-0", "http://\(pod).db.default.svc.cluster.local:8080/journal"]).output }
        // (Eventually: a headless Service's records follow its slices, which are rewritten at most
        // every 0.5 s, and under the parallel suites the last Ready can beat them to the DNS.)
        #expect(try await eventually(5) { try await journal("db-1").hasPrefix("db-1 started") })
        let oldUID = try await c.jsonpath("pod/db-1", "{.metadata.uid}")
        #expect(try await c.kubectl(["delete", "pod", "db-1"]).status == .exited(0))
        let back = try await eventually(20) {
            try await c.jsonpath("pod/db-1", "{.metadata.uid} {.status.conditions[?(@.type==\"Ready\")].status}").hasSuffix(" True")
        }
        let newUID = try await c.jsonpath("pod/db-1", "{.metadata.uid}")
        #expect(back && newUID != oldUID)
        var seen = ""
        #expect(try await eventually { seen = try await journal("db-1"); return seen.split(separator: "\n").count == 2 }, "\(seen)")

        // Scale down keeps the claims; scaling up again finds the data.
        #expect(try await c.kubectl(["scale", "sts/db", "--replicas=1"]).status == .exited(0))
        #expect(try await eventually(20) { try await c.jsonpath("pods", "{.items[?(@.metadata.labels.app=='db')].metadata.name}") == "db-0" })
        #expect(try await c.jsonpath("pvc", "{.items[*].metadata.name}") == "data-db-0 data-db-1 data-db-2")
        #expect(try await c.kubectl(["scale", "sts/db", "--replicas=3"]).status == .exited(0))
        #expect(try await c.kubectl(["rollout", "status", "sts/db", "--timeout=60s"]).status == .exited(0))
        #expect(try await eventually { try await journal("db-2").split(separator: "\n").count == 2 })

        // A StatefulSet without its headless Service says so in an event.
        let orphan = """
        apiVersion: apps/v1
        kind: StatefulSet
        metadata: {name: lost}
        spec:
          serviceName: nowhere
          replicas: 0
          selector: {matchLabels: {app: lost}}
          template:
            metadata: {labels: {app: lost}}
            spec: {containers: [{name: c, image: pause}]}
        """
        #expect(try await c.kubectl(["apply"], stdin: orphan).status == .exited(0))
        #expect(try await eventually {
            try await c.kubectl(["get", "events", "--field-selector", "reason=FailedHeadlessService", "-o", "jsonpath={.items[*].message}"])
                .output.contains("service \"nowhere\" not found")
        })
        #expect(try await c.kubectl(["delete", "sts", "lost"]).status == .exited(0))

        // down and up on the kept data dir: the workloads come back, and so does the data.
        let linesBefore = try await journal("db-1").split(separator: "\n").count
        let soloBefore = try await c.jsonpath("pods", "{.items[?(@.metadata.labels.app=='solo')].metadata.name}")
        #expect(!soloBefore.isEmpty)
        #expect(try await c.kemu(["down"]).status == .exited(0))
        #expect(FileSystem.exists("\(data)/apiserver") && FileSystem.exists("\(data)/volumes/default/data-db-0/journal"))
        let again = try await c.kemu(["up", "--data-dir", data])
        #expect(again.status == .exited(0), "\(again.output)")
        let revived = try await eventually(30) {
            let ready = try await c.jsonpath("pods", "{range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status} {end}")
            return ready.split(separator: " ").count == 4 && !ready.contains("=False") && ready.contains("\(soloBefore)=True")
        }
        #expect(revived)
        #expect(try await eventually(10) { seen = try await journal("db-1"); return seen.split(separator: "\n").count == linesBefore + 1 }, "\(seen)")
    }
}
