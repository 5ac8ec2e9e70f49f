import Foundation
import Testing

/// A pod's files from ConfigMaps, Secrets and the downward API, at the paths its manifest names,
/// on a real cluster: each container in a root of its own, volumes read-only where kubelet makes
/// them so, an emptyDir shared by the pod's containers and no one else's, a ConfigMap's change in
/// the file within seconds, a missing source held with kubelet's FailedMount message.
@Suite(.serialized, .enabled(if: isRoot, "creates network namespaces: run as root"))
struct VolumesRootTests {
    static let manifest = """
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: app}
    data: {greeting: hello, "app.conf": "port=8080\\n"}
    ---
    apiVersion: v1
    kind: Secret
    metadata: {name: db}
    stringData: {password: s3cret}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: files, labels: {app: files}}
    spec:
      containers:
      - name: main
        image: busybox
        command: [sh, -c, 'echo main > /data/who; sleep 3600']
        env: [{name: MEM_MI, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}]
        resources: {limits: {memory: 64Mi}}
        volumeMounts:
        - {name: config, mountPath: /etc/app}
        - {name: secret, mountPath: /etc/db}
        - {name: info, mountPath: /etc/podinfo}
        - {name: scratch, mountPath: /data}
        - {name: all, mountPath: /srv/all}
        - {name: config, mountPath: /opt/greeting.txt, subPath: greeting}
      - name: side
        image: busybox
        command: [sh, -c, 'sleep 3600']
        volumeMounts: [{name: scratch, mountPath: /shared}]
      volumes:
      - {name: config, configMap: {name: app}}
      - {name: secret, secret: {secretName: db, defaultMode: 0400}}
      - {name: scratch, emptyDir: {}}
      - name: info
        downwardAPI:
          items:
          - {path: labels, fieldRef: {fieldPath: metadata.labels}}
          - {path: meta/name, fieldRef: {fieldPath: metadata.name}}
      - name: all
        projected:
          sources:
          - configMap: {name: app, items: [{key: greeting, path: config/greeting}]}
          - secret: {name: db, items: [{key: password, path: secret/password}]}
          - downwardAPI: {items: [{path: namespace, fieldRef: {fieldPath: metadata.namespace}}]}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: other}
    spec:
      containers:
      - name: main
        image: busybox
        command: [sh, -c, 'echo other > /data/who; sleep 3600']
        volumeMounts: [{name: scratch, mountPath: /data}]
      volumes: [{name: scratch, emptyDir: {}}]
    """

    static let waiting = """
    apiVersion: v1
    kind: Pod
    metadata: {name: early}
    spec:
      containers:
      - {name: main, image: busybox, command: [sleep, '3600'], volumeMounts: [{name: c, mountPath: /cfg}]}
      volumes: [{name: c, configMap: {name: later}}]
    """

    @Test func filesAtTheirPathsInARootOfTheirOwn() async throws {
        let c = TestCluster("rvol")
        defer { c.release() }
        #expect(try await c.up().status == .exited(0))
        #expect(try await c.kubectl(["apply"], stdin: Self.manifest).status == .exited(0))
        #expect(try await c.kubectl(["wait", "--for=condition=Ready", "pod/files", "pod/other", "--timeout=60s"]).status == .exited(0))
        func run(_ pod: String, _ script: String, in container: String = "main") async throws -> String {
            try await c.kubectl(["exec", pod, "-c", container, "--", "sh", "-c", script]).output
        }
        #expect(try await run("files", "cat /etc/app/greeting /etc/app/app.conf") == "helloport=8080\n")
        // 0400 as asked, and still the container's to read (kemu runs it as an unprivileged user).
        #expect(try await run("files", "cat /etc/db/password; stat -c ' %a' /etc/db/..data/password") == "s3cret 400\n")
        #expect(try await run("files", "cat /etc/podinfo/labels; echo; cat /etc/podinfo/meta/name") == "app=\"files\"\nfiles")
        #expect(try await run("files", "cat /srv/all/config/greeting /srv/all/secret/password /srv/all/namespace") == "hellos3cretdefault")
        #expect(try await run("files", "cat /opt/greeting.txt") == "hello")
        #expect(try await run("files", "echo $MEM_MI") == "64\n")
        // Read-only, as kubelet mounts them.
        #expect(try await run("files", "touch /etc/app/new 2>/dev/null && echo written || echo refused") == "refused\n")
        // The emptyDir is the pod's: its two containers share it; the other pod's /data is its own.
        #expect(try await run("files", "cat /shared/who", in: "side") == "main\n")
        #expect(try await run("other", "cat /data/who") == "other\n")
        // A container's writes stay in its own root: not on the machine, not in its neighbour.
        let marker = "/tmp/kemu-rvol-\(getpid())"
        #expect(try await run("files", "echo mine > \(marker) && cat \(marker)") == "mine\n")
        #expect(!FileManager.default.fileExists(atPath: marker))
        #expect(try await run("files", "cat \(marker) 2>/dev/null || echo absent", in: "side") == "absent\n")

        // A ConfigMap's change reaches the mounted file within seconds (a new key too).
        #expect(try await c.kubectl(["patch", "configmap", "app", "-p", #"{"data":{"greeting":"bonjour","extra":"1"}}"#]).status == .exited(0))
        #expect(try await eventually(10) { try await run("files", "cat /etc/app/greeting /etc/app/extra 2>&1") == "bonjour1" })
        #expect(try await c.kubectl(["label", "pod", "files", "tier=web"]).status == .exited(0))
        #expect(try await eventually(10) { try await run("files", "cat /etc/podinfo/labels") == "app=\"files\"\ntier=\"web\"" })

        // A missing ConfigMap holds the pod in ContainerCreating with kubelet's message, until it comes.
        #expect(try await c.kubectl(["apply"], stdin: Self.waiting).status == .exited(0))
        let mountEvent = { try await c.kubectl(["get", "events", "--field-selector", "involvedObject.name=early,reason=FailedMount",
                                                 "-o", "jsonpath={.items[0].message}"]).output }
        #expect(try await eventually(10) { try await mountEvent() == #"MountVolume.SetUp failed for volume "c" : configmap "later" not found"# })
        #expect(try await c.jsonpath("pod/early", "{.status.containerStatuses[0].state.waiting.reason}") == "ContainerCreating")
        #expect(try await c.kubectl(["create", "configmap", "later", "--from-literal=k=v"]).status == .exited(0))
        #expect(try await c.kubectl(["wait", "--for=condition=Ready", "pod/early", "--timeout=30s"]).status == .exited(0))
        #expect(try await run("early", "cat /cfg/k") == "v")

        // A path that would climb out of its volume never reaches a node.
        let escape = Self.waiting.replacingOccurrences(of: "name: early", with: "name: escape")
            .replacingOccurrences(of: "mountPath: /cfg}", with: "mountPath: /cfg, subPath: ../../etc}")
        let refused = try await c.kubectl(["apply"], stdin: escape)
        #expect(refused.status != .exited(0))
        #expect(refused.output.contains(#"spec.containers[0].volumeMounts[0].subPath: Invalid value: "../../etc": must not contain '..'"#), "\(refused.output)")
    }
}

/// Resource limits held as kubelet holds them, and the postStart hook run before a container
/// counts as started.
@Suite(.serialized, .enabled(if: isRoot, "creates network namespaces: run as root"))
struct LimitsAndHooksRootTests {
    static let pods = """
    apiVersion: v1
    kind: Pod
    metadata: {name: hog}
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox
        command: [sh, -c, 'x=$(head -c 200000000 /dev/zero | tr "\\\\0" a); echo survived']
        resources: {limits: {memory: 32Mi}}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: spin}
    spec:
      containers:
      - {name: main, image: busybox, command: [sh, -c, 'while :; do :; done'], resources: {limits: {cpu: 200m}}}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: hooked}
    spec:
      containers:
      - name: main
        image: busybox
        command: [sleep, '3600']
        lifecycle: {postStart: {exec: {command: [sh, -c, 'echo hooked > /tmp/hook']}}}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: badhook}
    spec:
      containers:
      - name: main
        image: busybox
        command: [sleep, '3600']
        lifecycle: {postStart: {exec: {command: [sh, -c, 'exit 3']}}}
    """

    @Test func memoryAndCPULimitsAndPostStart() async throws {
        let c = TestCluster("rlim")
        defer { c.release() }
        #expect(try await c.up().status == .exited(0))
        #expect(try await c.kubectl(["apply"], stdin: Self.pods).status == .exited(0))
        // Past its memory limit the kernel kills it, and the status says why.
        let state = "{.status.containerStatuses[0].state.terminated.reason}/{.status.containerStatuses[0].state.terminated.exitCode}"
        #expect(try await eventually(20) { try await c.jsonpath("pod/hog", state) == "OOMKilled/137" })
        #expect(try await c.kubectl(["logs", "hog"]).output.contains("survived") == false)
        // A busy loop held to its 200m quota (a whole core without it), as `kubectl top` shows.
        #expect(try await c.kubectl(["wait", "--for=condition=Ready", "pod/spin", "pod/hooked", "--timeout=30s"]).status == .exited(0))
        try await Task.sleep(for: .seconds(3))
        _ = try await c.kubectl(["top", "pod", "spin"])
        try await Task.sleep(for: .seconds(3))
        let top = try await c.kubectl(["top", "pod", "spin", "--no-headers"]).output
        let millicores = top.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0.dropLast()) }
        #expect(millicores.map { $0 <= 400 } == true, "\(top)")
        // A command run in the container is held by its limits too.
        let groups = try await c.kubectl(["exec", "spin", "--", "cat", "/proc/self/cgroup"]).output
        #expect(groups.contains("/kemu-rlim-"), "\(groups)")
        // The hook ran inside the container, before it counted as started.
        #expect(try await c.kubectl(["exec", "hooked", "--", "cat", "/tmp/hook"]).output == "hooked\n")
        // A failing hook: FailedPostStartHook, the container killed and restarted.
        let hookEvent = { try await c.kubectl(["get", "events", "--field-selector", "involvedObject.name=badhook,reason=FailedPostStartHook",
                                                "-o", "jsonpath={.items[0].message}"]).output }
        #expect(try await eventually(15) { try await hookEvent().contains("Exec lifecycle hook ([sh -c exit 3]) for Container \"main\"") })
        #expect(try await eventually(15) { (Int(try await c.jsonpath("pod/badhook", "{.status.containerStatuses[0].restartCount}")) ?? 0) >= 1 })
        #expect(try await c.jsonpath("pod/badhook", "{.status.containerStatuses[0].ready}") == "false")
    }
}
