import Foundation
import Glibc
import KemuSystem
import Testing

/// `kemu up` as a user runs it: a real API server, one agent per node, pods as real processes
/// answering TCP in their own namespaces, restarts, logs, and `kemu down` leaving nothing.
@Suite(.serialized, .enabled(if: isRoot, "creates network namespaces: run as root"))
struct ClusterUpTests {
    let cluster = "rup"
    let c = TestCluster("rup")
    var kubeconfig: String { c.kubeconfig }
    var cacheDir: String { c.cacheDir }

    func kubectl(_ args: [String], stdin: String? = nil) async throws -> (status: ProcessExit, output: String) {
        try await c.kubectl(args, stdin: stdin)
    }

    func jsonpath(_ object: String, _ path: String) async throws -> String { try await c.jsonpath(object, path) }

    @Test func podsRunAnswerRestartAndAllGoesAtDown() async throws {
        let kemu = try kemuBinary()
        defer {
            _ = try? run([kemu, "down", "--cluster", cluster])
            try? FileManager.default.removeItem(atPath: cacheDir)
        }
        _ = try await runOff([kemu, "down", "--cluster", cluster])
        let up = try await runOff([kemu, "up", "--cluster", cluster])
        #expect(up.status == .exited(0), "\(up.output)")
        #expect(up.output.contains("all 2 nodes Ready") && up.output.contains("export KUBECONFIG=\(kubeconfig)"))
        let again = try await runOff([kemu, "up", "--cluster", cluster])
        #expect(again.status != .exited(0) && again.output.contains("cluster rup is already up"))

        let nodes = try await kubectl(["get", "nodes", "-o", "wide"]).output
        #expect(nodes.contains("node-1   Ready") && nodes.contains("172.31.0.12"), "\(nodes)")
        // The kubernetes Service leads to the API server's address on the fabric, where the agents reach it.
        #expect(try await jsonpath("endpoints/kubernetes", "{.subsets[0].addresses[0].ip}:{.subsets[0].ports[0].port}") == "172.31.0.2:6443")
        #expect(try await jsonpath("svc/kubernetes", "{.spec.clusterIP}") == "10.96.0.1")

        let manifest = """
        apiVersion: apps/v1
        kind: ReplicaSet
        metadata: {name: echo}
        spec:
          replicas: 3
          selector: {matchLabels: {app: echo}}
          template:
            metadata: {labels: {app: echo}}
            spec:
              containers: [{name: echo, image: kemu/echo, ports: [{containerPort: 8080}]}]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: once}
        spec:
          restartPolicy: Never
          containers: [{name: c, image: busybox, command: [sh, -c, "echo hello from $(POD_NAME) on $(NODE_NAME); exit 3"]}]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: no-program}
        spec:
          containers: [{name: c, image: busybox, command: [/no/such/program]}]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: unknown-image}
        spec:
          containers: [{name: c, image: nosuch/image}]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: too-big}
        spec:
          containers: [{name: c, image: busybox, resources: {requests: {cpu: "64"}}}]

        """
        #expect(try await kubectl(["apply"], stdin: manifest).status == .exited(0))
        let allReady = try await eventually {
            try await jsonpath("pods", "{range .items[?(@.metadata.labels.app=='echo')]}{.status.containerStatuses[0].ready} {end}") == "true true true "
        }
        #expect(allReady)
        #expect(try await eventually { try await jsonpath("rs/echo", "{.status.readyReplicas}") == "3" })
        // Spread over both nodes, each pod answering from its own address to a pod on another node.
        let placement = try await kubectl(["get", "pods", "-l", "app=echo", "-o", "jsonpath={range .items[*]}{.metadata.name}={.spec.nodeName}={.status.podIP} {end}"]).output
        let pods = placement.split(separator: " ").map { $0.split(separator: "=").map(String.init) }
        #expect(Set(pods.map { $0[1] }) == ["node-1", "node-2"], "\(placement)")
        for pod in pods {
            guard let other = pods.first(where: { $0[1] != pod[1] }) else { continue }
            let answer = try await runOff([kemu, "curl", "--cluster", cluster, "--from", pod[0], "http://\(other[2]):8080/?format=text"])
            #expect(answer.output.hasPrefix("pod=\(other[0]) namespace=default ip=\(other[2]) node=\(other[1]) client=\(pod[2]):"), "\(answer.output)")
        }
        // The raw TCP port echoes.
        let script = "import socket; s = socket.create_connection(('\(pods[1][2])', 9000), 3); s.sendall(b'ping'); print(s.recv(4).decode())"
        let echoed = try await runOff([kemu, "exec", "--cluster", cluster, pods[0][0], "--", "python3", "-c", script])
        #expect(echoed.output == "ping\n", "\(echoed.output)")

        // kill -9 of a pod's process: seen at once, restarted, Ready and answering again.
        let victim = pods[0][0]
        let pid = try await jsonpath("pod/\(victim)", "{.status.containerStatuses[0].containerID}").replacingOccurrences(of: "kemu://", with: "")
        #expect(Int32(pid) != nil && kill(Int32(pid)!, SIGKILL) == 0)
        let restarted = try await eventually {
            try await jsonpath("pod/\(victim)", "{.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].ready}") == "1 true"
        }
        #expect(restarted)
        #expect(try await jsonpath("pod/\(victim)", "{.status.containerStatuses[0].lastState.terminated.exitCode}") == "137")
        let revived = try await eventually {
            try await runOff([kemu, "curl", "--cluster", cluster, "--from", pods[1][0], "http://\(pods[0][2]):8080/?format=text"]).output.hasPrefix("pod=\(victim) ")
        }
        #expect(revived)

        // The agent of the victim's node dies (kill -9) and a new one starts: it takes the running
        // process over (same pid, same restart count) and still notices when it dies.
        let victimNode = pods[0][1]
        let adoptedPID = try await jsonpath("pod/\(victim)", "{.status.containerStatuses[0].containerID}")
        try c.killDaemon("node-\(victimNode)")
        let newAgent = try c.restartAgent(victimNode)
        try await Task.sleep(for: .seconds(1))
        #expect(try await jsonpath("pod/\(victim)", "{.status.containerStatuses[0].containerID} {.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].ready}")
                == "\(adoptedPID) 1 true")
        let adopted = Int32(adoptedPID.replacingOccurrences(of: "kemu://", with: ""))!
        #expect(kill(adopted, 0) == 0)
        kill(adopted, SIGKILL)
        let noticed = try await eventually {
            try await jsonpath("pod/\(victim)", "{.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].lastState.terminated.reason}")
                == "2 ContainerStatusUnknown"
        }
        #expect(noticed)

        // A pod that runs once: Failed with its exit code, and its output in the log.
        #expect(try await eventually { try await jsonpath("pod/once", "{.status.phase}") == "Failed" })
        #expect(try await jsonpath("pod/once", "{.status.containerStatuses[0].state.terminated.exitCode}") == "3")
        let log = try await runOff([kemu, "logs", "--cluster", cluster, "once"]).output
        #expect(log.hasPrefix("hello from once on node-"), "\(log)")
        #expect(try await kubectl(["logs", "once"]).output == log)

        // kubectl exec through the API server: output, stderr, exit code, stdin, inside the pod.
        let exec = try await kubectl(["exec", pods[0][0], "--", "sh", "-c", "hostname -I; echo oops >&2; exit 4"])
        #expect(exec.status == .exited(4), "\(exec.output)")
        #expect(exec.output.contains(pods[0][2]) && exec.output.contains("oops") && exec.output.contains("command terminated with exit code 4"))
        let file = cacheDir + "-stdin.txt"
        try "through stdin\n".write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let cat = try await runOff(["/bin/sh", "-c", "/usr/bin/kubectl --kubeconfig \(kubeconfig) --cache-dir \(cacheDir) exec -i \(pods[0][0]) -- cat < \(file)"])
        #expect(cat.status == .exited(0) && cat.output == "through stdin\n", "\(cat.output)")

        // Bad input: reasons a user can read, and nothing running for them.
        #expect(try await eventually { try await jsonpath("pod/unknown-image", "{.status.containerStatuses[0].state.waiting.reason}") == "ErrImagePull" })
        #expect(try await jsonpath("pod/unknown-image", "{.status.containerStatuses[0].state.waiting.message}").contains("\"nosuch/image\" is not in configs/images.yaml"))
        #expect(try await jsonpath("pod/too-big", "{.status.phase}") == "Pending")
        #expect(try await eventually {
            ["RunContainerError", "CrashLoopBackOff"].contains(try await jsonpath("pod/no-program", "{.status.containerStatuses[0].state.waiting.reason}"))
        })
        let failedStart = try await kubectl(["get", "events", "--field-selector", "involvedObject.name=no-program,reason=FailedStart",
                                            "-o", "jsonpath={.items[0].message}"]).output
        #expect(failedStart == "exec: \"/no/such/program\": executable file not found in $PATH")
        let ghost = try await runOff([kemu, "node", "--name", "ghost", "--cluster", cluster])
        #expect(ghost.status != .exited(0) && ghost.output.contains("node ghost is not in cluster rup (nodes: node-1, node-2)"), "\(ghost.output)")

        // kemu/echo under load: 200 connections at once from another pod, every one answered.
        let burst = """
        import socket, threading
        ok = []
        def one():
            s = socket.create_connection(('\(pods[0][2])', 8080), 5)
            s.sendall(b'GET /x?format=text HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')
            data = b''
            while True:
                chunk = s.recv(4096)
                if not chunk: break
                data += chunk
            ok.append(b'pod=\(pods[0][0]) ' in data)
        threads = [threading.Thread(target=one) for _ in range(200)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(sum(ok))
        """
        let answered = try await runOff([kemu, "exec", "--cluster", cluster, pods[1][0], "--", "python3", "-c", burst])
        #expect(answered.output == "200\n", "\(answered.output)")
        let events = try await kubectl(["get", "events", "--field-selector", "involvedObject.name=too-big", "-o", "jsonpath={.items[*].message}"]).output
        #expect(events == "0/2 nodes are available: 2 Insufficient cpu.")

        // Deleting a pod stops its process and removes its sandbox.
        let deletedPID = Int32(try await jsonpath("pod/\(pods[1][0])", "{.status.containerStatuses[0].containerID}").replacingOccurrences(of: "kemu://", with: ""))!
        #expect(try await kubectl(["delete", "pod", pods[1][0]]).status == .exited(0))
        #expect(await eventually { kill(deletedPID, 0) != 0 })
        #expect(await eventually { !namespaces(of: cluster).contains { $0.hasPrefix("kemu-rup-p-\(pods[1][0])-") } })

        let survivors = try await jsonpath("pods", "{.items[*].status.containerStatuses[0].containerID}")
            .split(separator: " ").compactMap { Int32($0.replacingOccurrences(of: "kemu://", with: "")) }
        let daemons = ["server", "node-node-1", "node-node-2"].compactMap { try? FileSystem.readFile("/run/kemu/\(cluster)/\($0).pid") }
            .compactMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        #expect(daemons.count == 3 && !survivors.isEmpty)
        // kill -9 of the server and an agent: the supervisor starts both again, kemu status
        // counts the restarts, an Event tells, and kemu down still finds and removes everything
        // (the supervisor, server, two agents, two proxies and the load balancer).
        for pid in daemons.prefix(2) { kill(pid, SIGKILL) }
        let pidOf = { (name: String) in (try? FileSystem.readFile("/run/kemu/\(cluster)/\(name).pid")).flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) } }
        let supervised = await eventually(15) {
            ["server", "node-node-1"].allSatisfy { name in pidOf(name).map { !daemons.contains($0) && kill($0, 0) == 0 } ?? false }
        }
        #expect(supervised, "the supervisor did not restart the server and node-1's agent")
        let status = try await runOff([kemu, "status", "--cluster", cluster]).output
        for name in ["server", "node-node-1"] {
            let row = status.split(separator: "\n").first { $0.hasPrefix(name + " ") }?.split(separator: " ").map(String.init) ?? []
            #expect(row.count >= 4 && row[2] == "running" && (Int(row[3]) ?? 0) >= 1, "\(name): \(status)")
        }
        let told = try await eventually(20) {
            let messages = try await kubectl(["get", "events", "-A", "--field-selector", "reason=DaemonRestarted", "-o", "jsonpath={.items[*].message}"]).output
            return messages.contains("kemu server exited unexpectedly") && messages.contains("kemu node (node-1) exited unexpectedly")
        }
        #expect(told, "no DaemonRestarted Events for the server and node-1's agent")
        let restartedPIDs = ["server", "node-node-1"].compactMap(pidOf)
        let down = try await runOff([kemu, "down", "--cluster", cluster])
        #expect(down.status == .exited(0) && down.output.contains("lb node-node-1 node-node-2 proxy-node-1 proxy-node-2 server supervisor)"), "\(down.output)")
        #expect(namespaces(of: cluster).isEmpty)
        #expect(!FileSystem.exists("/run/kemu/\(cluster)"))
        #expect(!FileSystem.list("/etc/netns").contains { $0.hasPrefix("kemu-\(cluster)-") })
        // The agent this test started is its child: collect it, or it would linger as a zombie.
        #expect(await eventually(5) { waitpid(newAgent, nil, WNOHANG) == newAgent })
        for pid in survivors + daemons + restartedPIDs { #expect(kill(pid, 0) != 0, "pid \(pid) still runs") }
    }

    @Test func probesRestartAndGateReadinessAndDeletionIsGraceful() async throws {
        let kemu = try kemuBinary()
        let cluster = "rprobe"
        let kubeconfig = "/run/kemu/\(cluster)/apiserver/kubeconfig"
        defer {
            _ = try? run([kemu, "down", "--cluster", cluster])
            try? FileManager.default.removeItem(atPath: cacheDir)
        }
        _ = try await runOff([kemu, "down", "--cluster", cluster])
        #expect(try await runOff([kemu, "up", "--cluster", cluster]).status == .exited(0))
        func kubectl(_ args: [String]) async throws -> String {
            try await runOff(["/usr/bin/kubectl", "--kubeconfig", kubeconfig, "--cache-dir", cacheDir] + args).output
        }
        func get(_ object: String, _ path: String) async throws -> String { try await kubectl(["get", object, "-o", "jsonpath=\(path)"]) }
        let manifest = """
        apiVersion: v1
        kind: Pod
        metadata: {name: live}
        spec:
          containers:
          - name: echo
            image: kemu/echo
            args: [--fail-after, "1"]
            livenessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1, failureThreshold: 2}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: slow}
        spec:
          containers:
          - name: echo
            image: kemu/echo
            args: [--ready-after, "6"]
            ports: [{name: http, containerPort: 8080}]
            readinessProbe: {httpGet: {path: /readyz, port: http}, periodSeconds: 1}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: nobody}
        spec:
          containers:
          - name: c
            image: pause
            readinessProbe: {tcpSocket: {port: 1234}, periodSeconds: 1}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: execready}
        spec:
          containers:
          - name: c
            image: pause
            readinessProbe: {exec: {command: [grep, -q, execready, /etc/hosts]}, periodSeconds: 1}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: stubborn}
        spec:
          terminationGracePeriodSeconds: 6
          containers:
          - name: c
            image: busybox
            command: [sh, -c, "trap '' TERM; while true; do sleep 0.1; done"]

        """
        let file = cacheDir + "-probes.yaml"
        try manifest.write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        _ = try await kubectl(["apply", "-f", file])

        // readiness: not ready while /readyz says 503, ready after --ready-after.
        // (Told by the times the status keeps, not by catching it unready: on a loaded machine a
        // kubectl can take seconds.)
        #expect(try await eventually(5) { try await get("pod/slow", "{.status.phase}") == "Running" })
        #expect(try await eventually(20) { try await get("pod/slow", "{.status.containerStatuses[0].ready}") == "true" })
        let times = try await get("pod/slow", "{.status.containerStatuses[0].state.running.startedAt} {.status.conditions[?(@.type==\"Ready\")].lastTransitionTime}")
            .split(separator: " ").compactMap { ISO8601DateFormatter().date(from: String($0)) }
        #expect(times.count == 2 && times[1].timeIntervalSince(times[0]) >= 5, "started, then ready: \(times)")
        // exec probes run inside the pod's namespace, seeing its /etc/hosts.
        #expect(try await eventually(5) { try await get("pod/execready", "{.status.containerStatuses[0].ready}") == "true" })
        // a probe on a port nobody listens on: never ready, and the reason is in the events.
        #expect(try await get("pod/nobody", "{.status.containerStatuses[0].ready}") == "false")
        let unhealthy = try await kubectl(["get", "events", "--field-selector", "involvedObject.name=nobody,reason=Unhealthy", "-o", "jsonpath={.items[0].message}"])
        #expect(unhealthy.hasPrefix("Readiness probe failed: dial tcp 10.244.") && unhealthy.hasSuffix(":1234: connect: connection refused"), "\(unhealthy)")
        // liveness: /healthz fails after 1 s, two failures → killed and restarted.
        #expect(try await eventually(10) { Int(try await get("pod/live", "{.status.containerStatuses[0].restartCount}")) ?? 0 >= 1 })
        let killing = try await kubectl(["get", "events", "--field-selector", "involvedObject.name=live,reason=Killing", "-o", "jsonpath={.items[0].message}"])
        #expect(killing == "Container echo failed liveness probe, will be restarted")

        // Graceful deletion: SIGTERM ends kemu/echo at once; a process ignoring it is killed after its 1 s.
        let slowPID = Int32(try await get("pod/slow", "{.status.containerStatuses[0].containerID}").replacingOccurrences(of: "kemu://", with: ""))!
        #expect(try await runOff(["/usr/bin/kubectl", "--kubeconfig", kubeconfig, "--cache-dir", cacheDir, "delete", "pod", "slow"]).status == .exited(0))
        #expect(kill(slowPID, 0) != 0)
        #expect(try await get("pods", "{.items[*].metadata.name}").split(separator: " ").contains("slow") == false)
        let stubbornPID = Int32(try await get("pod/stubborn", "{.status.containerStatuses[0].containerID}").replacingOccurrences(of: "kemu://", with: ""))!
        let started = Date()
        _ = try await kubectl(["delete", "pod", "stubborn", "--wait=false"])
        // Still there a moment later: it ignores SIGTERM. (Checked first, and the grace is long:
        // a kubectl under the load of the parallel suites has taken three seconds.)
        #expect(kill(stubbornPID, 0) == 0)
        #expect(try await get("pod/stubborn", "{.metadata.deletionGracePeriodSeconds}") == "6")
        #expect(await eventually(10) { kill(stubbornPID, 0) != 0 })
        #expect(Date().timeIntervalSince(started) >= 5.9)
        #expect(await eventually(5) { ((try? await get("pods", "{.items[*].metadata.name}")) ?? "").contains("stubborn") == false })
        #expect(!namespaces(of: cluster).contains { $0.contains("-p-stubborn-") || $0.contains("-p-slow-") })
    }
}
