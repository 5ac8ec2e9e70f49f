import Foundation
import Glibc
import Testing

/// Dials from a client's own address on two nodes at once: node-2's proxy delivers a meshed
/// client's connections to a pod on node-2, node-1's dials the same pod for the same client once
/// it is out of the mesh. Each node picks the same ports for the same addresses, so node-1's
/// dials meet the tuples node-2's left in TIME_WAIT (its own side closed first, after the
/// client). The pod's answers pass node-2 on their way back and must go on to node-1.
@Suite(.serialized) struct TransparentDialRootTests {
    init() throws { try #require(getuid() == 0, "root tests need root") }

    static let manifest = """
    apiVersion: v1
    kind: Namespace
    metadata: {name: app, labels: {kemu.dev/mesh: enabled}}
    ---
    apiVersion: v1
    kind: Namespace
    metadata: {name: calls, labels: {kemu.dev/mesh: enabled}}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: web, namespace: app, labels: {app: web}}
    spec:
      nodeName: node-2
      containers:
      - name: echo
        image: kemu/echo
        readinessProbe: {httpGet: {path: /readyz, port: 8080}, periodSeconds: 1}
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: web, namespace: app}
    spec:
      selector: {app: web}
      ports: [{port: 80, targetPort: 8080}]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: caller, namespace: calls}
    spec:
      nodeName: node-1
      containers: [{name: c, image: python, command: [sleep, "3600"]}]

    """

    /// `n` keep-alive requests, one connection each, closed by the client once answered (so the
    /// proxy's side toward the pod closes first); prints how many were answered.
    static let closingFirst = """
    import socket, sys
    ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    answered = 0
    def length(data):
        head = data.split(b'\\r\\n\\r\\n', 1)[0].lower()
        return int(head.split(b'content-length:', 1)[1].split(b'\\r\\n', 1)[0]) if b'content-length:' in head else 0
    for _ in range(n):
        s = socket.create_connection((ip, port), 5)
        s.sendall(b'GET /?format=text HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')
        data = b''
        while b'\\r\\n\\r\\n' not in data or len(data.split(b'\\r\\n\\r\\n', 1)[1]) < length(data):
            chunk = s.recv(65536)
            if not chunk: break
            data += chunk
        answered += b' 200 ' in data.split(b'\\r\\n', 1)[0]
        s.close()
    print(answered)
    """

    @Test func aClientInAndThenOutOfTheMeshIsAnsweredWithoutWaiting() async throws {
        let c = TestCluster("rtwdial")
        defer { c.release() }
        #expect(try await c.up().status == .exited(0))
        #expect(try await c.kubectl(["apply"], stdin: Self.manifest).status == .exited(0))
        #expect(try await c.kubectl(["wait", "-n", "app", "--for=condition=Ready", "pod/web", "--timeout=60s"]).status == .exited(0))
        #expect(try await c.kubectl(["wait", "-n", "calls", "--for=condition=Ready", "pod/caller", "--timeout=60s"]).status == .exited(0))
        let clientIP = try await c.kubectl(["get", "-n", "calls", "pod/caller", "-o", "jsonpath={.status.podIP}"]).output
        let vip = try await c.kubectl(["get", "-n", "app", "svc/web", "-o", "jsonpath={.spec.clusterIP}"]).output
        let call = { (script: String, count: Int, env: [String]) in
            try await c.kemu(["exec", "-n", "calls", "caller", "--", "env"] + env + ["python3", "-c", script, vip, "80", "\(count)"]).output
        }

        // Both nodes' dial ports narrowed to 400 (200 a connect walks), as if they had dialled
        // for a while: the kernel walks them in turn from a counter the nodes share, so node-1's
        // dials come round to node-2's tuples within 200 rather than 7,000.
        for node in ["node-1", "node-2"] {
            #expect(try await runOff(["sysctl", "-qw", "net.ipv4.ip_local_port_range=20000 20399"], in: "kemu-\(c.name)-\(node)").status == .exited(0))
        }
        // In the mesh: node-2 dials the pod from the client's address, and closes first.
        #expect(try await eventually(20) { try await call(Self.closingFirst, 1, []).trimmingCharacters(in: .whitespacesAndNewlines) == "1" })
        let meshed = try await call(Self.closingFirst, 150, [])
        #expect(meshed.trimmingCharacters(in: .whitespacesAndNewlines) == "150", "\(meshed)")
        let left = try await runOff(["ss", "-Htan", "state", "time-wait", "src", clientIP], in: "kemu-\(c.name)-node-2").output
        #expect(left.split(separator: "\n").count >= 100, "node-2 holds the client's tuples in TIME_WAIT: \(left.prefix(300))")

        // Out of the mesh: node-1 dials the same pod from the same address, walking the same
        // ports. Every dial is answered at once: none waits out its timeout and is retried.
        #expect(try await c.kubectl(["label", "namespace", "calls", "kemu.dev/mesh-"]).status == .exited(0))
        let opened = { MeshRootTests.value(try await c.metrics("node-1"), "kemu_mesh_streams_opened_total") }
        #expect(try await eventually(20) {
            let before = try await opened()
            _ = try await call(requestLoop, 1, [])
            return try await opened() == before
        }, "the caller's connections no longer go through the mesh")
        let failuresBefore = metricSum(try await c.metrics("node-1"), "kemu_proxy_endpoint_connect_failures_total")
        let plain = try await call(requestLoop, 200, [])
        let result = try? JSONDecoder().decode(LoopResult.self, from: Data(plain.utf8))
        #expect(result?.failures == [] && result?.counts.values.reduce(0, +) == 200, "\(plain)\n\(c.warnings())")
        let failed = metricSum(try await c.metrics("node-1"), "kemu_proxy_endpoint_connect_failures_total") - failuresBefore
        // (Before the fix, 143 of 200. A few are left room for a loaded run, where a starved
        // engine can find its dial's 250 ms timer due before the answer it has not read yet.)
        #expect(failed < 10, "node-1's dials that went unanswered (each a 250 ms wait and a retry): \(failed)")
    }
}
