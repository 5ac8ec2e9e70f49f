import Foundation
import Glibc
import KemuSystem
import Testing

/// `kemu up` as a user runs it: a real API server, one agent per node, pods as real processes
/// answering TCP in their own namespaces, restarts, logs, and `kemu down` leaving nothing.
@Suite(.serialized, .enabled(if: isRoot, "creates network namespaces: run as root"))
struct ClusterUpTests {
    let cluster = "rup"
    var kubeconfig: String { "/run/kemu/\(cluster)/apiserver/kubeconfig" }
    let cacheDir = NSTemporaryDirectory() + "kemu-rup-kubectl-\(UUID().uuidString)"

    func kubectl(_ args: [String], stdin: String? = nil) throws -> (status: ProcessExit, output: String) {
        let argv = ["/usr/bin/kubectl", "--kubeconfig", kubeconfig, "--cache-dir", cacheDir] + args
        guard let stdin else { return try run(argv) }
        let file = cacheDir + "-stdin.yaml"
        try stdin.write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        return try run(argv + ["-f", file])
    }

    func jsonpath(_ object: String, _ path: String) throws -> String {
        try kubectl(["get", object, "-o", "jsonpath=\(path)"]).output
    }

    /// Polls until `check` holds or `seconds` pass; returns whether it held.
    func eventually(_ seconds: Double = 10, _ check: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try check() { return true }
            usleep(50_000)
        }
        return try check()
    }

    func echoPod(_ name: String) -> String {
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: \(name), labels: {app: echo}}
        spec:
          containers: [{name: echo, image: kemu/echo, ports: [{containerPort: 8080}]}]

        """
    }

    @Test func podsRunAnswerRestartAndAllGoesAtDown() throws {
        let kemu = try kemuBinary()
        defer {
            _ = try? run([kemu, "down", "--cluster", cluster])
            try? FileManager.default.removeItem(atPath: cacheDir)
        }
        _ = try run([kemu, "down", "--cluster", cluster])
        let up = try run([kemu, "up", "--cluster", cluster])
        #expect(up.status == .exited(0), "\(up.output)")
        #expect(up.output.contains("all 2 nodes Ready") && up.output.contains("export KUBECONFIG=\(kubeconfig)"))
        let again = try run([kemu, "up", "--cluster", cluster])
        #expect(again.status != .exited(0) && again.output.contains("cluster rup is already up"))

        let nodes = try kubectl(["get", "nodes", "-o", "wide"]).output
        #expect(nodes.contains("node-1   Ready") && nodes.contains("172.31.0.12"), "\(nodes)")

        let manifest = ["echo-a", "echo-b", "echo-c"].map(echoPod).joined(separator: "---\n") + """
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
        #expect(try kubectl(["apply"], stdin: manifest).status == .exited(0))
        let allReady = try eventually {
            try jsonpath("pods", "{range .items[?(@.metadata.labels.app=='echo')]}{.status.containerStatuses[0].ready} {end}") == "true true true "
        }
        #expect(allReady)
        // Spread over both nodes, each pod answering from its own address to a pod on another node.
        let placement = try kubectl(["get", "pods", "-l", "app=echo", "-o", "jsonpath={range .items[*]}{.metadata.name}={.spec.nodeName}={.status.podIP} {end}"]).output
        let pods = placement.split(separator: " ").map { $0.split(separator: "=").map(String.init) }
        #expect(Set(pods.map { $0[1] }) == ["node-1", "node-2"], "\(placement)")
        for pod in pods {
            guard let other = pods.first(where: { $0[1] != pod[1] }) else { continue }
            let answer = try run([kemu, "curl", "--cluster", cluster, "--from", pod[0], "http://\(other[2]):8080/?format=text"])
            #expect(answer.output.hasPrefix("pod=\(other[0]) namespace=default ip=\(other[2]) node=\(other[1]) client=\(pod[2]):"), "\(answer.output)")
        }
        // The raw TCP port echoes.
        let script = "import socket; s = socket.create_connection(('\(pods[1][2])', 9000), 3); s.sendall(b'ping'); print(s.recv(4).decode())"
        let echoed = try run([kemu, "exec", "--cluster", cluster, pods[0][0], "--", "python3", "-c", script])
        #expect(echoed.output == "ping\n", "\(echoed.output)")

        // kill -9 of a pod's process: seen at once, restarted, Ready and answering again.
        let victim = pods[0][0]
        let pid = try jsonpath("pod/\(victim)", "{.status.containerStatuses[0].containerID}").replacingOccurrences(of: "kemu://", with: "")
        #expect(Int32(pid) != nil && kill(Int32(pid)!, SIGKILL) == 0)
        let restarted = try eventually {
            try jsonpath("pod/\(victim)", "{.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].ready}") == "1 true"
        }
        #expect(restarted)
        #expect(try jsonpath("pod/\(victim)", "{.status.containerStatuses[0].lastState.terminated.exitCode}") == "137")
        let revived = try eventually {
            try run([kemu, "curl", "--cluster", cluster, "--from", pods[1][0], "http://\(pods[0][2]):8080/?format=text"]).output.hasPrefix("pod=\(victim) ")
        }
        #expect(revived)

        // A pod that runs once: Failed with its exit code, and its output in the log.
        #expect(try eventually { try jsonpath("pod/once", "{.status.phase}") == "Failed" })
        #expect(try jsonpath("pod/once", "{.status.containerStatuses[0].state.terminated.exitCode}") == "3")
        let log = try run([kemu, "logs", "--cluster", cluster, "once"]).output
        #expect(log.hasPrefix("hello from once on node-"), "\(log)")

        // Bad input: reasons a user can read, and nothing running for them.
        #expect(try eventually { try jsonpath("pod/unknown-image", "{.status.containerStatuses[0].state.waiting.reason}") == "ErrImagePull" })
        #expect(try jsonpath("pod/unknown-image", "{.status.containerStatuses[0].state.waiting.message}").contains("\"nosuch/image\" is not in configs/images.yaml"))
        #expect(try jsonpath("pod/too-big", "{.status.phase}") == "Pending")
        let events = try kubectl(["get", "events", "--field-selector", "involvedObject.name=too-big", "-o", "jsonpath={.items[*].message}"]).output
        #expect(events == "0/2 nodes are available: 2 Insufficient cpu.")

        // Deleting a pod stops its process and removes its sandbox.
        let deletedPID = Int32(try jsonpath("pod/\(pods[1][0])", "{.status.containerStatuses[0].containerID}").replacingOccurrences(of: "kemu://", with: ""))!
        #expect(try kubectl(["delete", "pod", pods[1][0]]).status == .exited(0))
        #expect(eventually { kill(deletedPID, 0) != 0 })
        #expect(eventually { !namespaces(of: cluster).contains { $0.hasPrefix("kemu-rup-p-\(pods[1][0])-") } })

        let survivors = try jsonpath("pods", "{.items[*].status.containerStatuses[0].containerID}")
            .split(separator: " ").compactMap { Int32($0.replacingOccurrences(of: "kemu://", with: "")) }
        let daemons = ["server", "node-node-1", "node-node-2"].compactMap { try? FileSystem.readFile("/run/kemu/\(cluster)/\($0).pid") }
            .compactMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        #expect(daemons.count == 3 && !survivors.isEmpty)
        let down = try run([kemu, "down", "--cluster", cluster])
        #expect(down.status == .exited(0) && down.output.contains("stopped 3 daemons"), "\(down.output)")
        #expect(namespaces(of: cluster).isEmpty)
        #expect(!FileSystem.exists("/run/kemu/\(cluster)"))
        #expect(!FileSystem.list("/etc/netns").contains { $0.hasPrefix("kemu-\(cluster)-") })
        for pid in survivors + daemons { #expect(kill(pid, 0) != 0, "pid \(pid) still runs") }
    }
}
