import Foundation
import Glibc
import Testing

/// A meshed client's first bytes go into the tunnel right behind its CONNECT, before the
/// endpoint's node has reached the pod. When that node then cannot (the pod refuses), the
/// connection still goes to another endpoint whole: bytes past the copy kept for a replay are
/// held back until the answer, not sent and lost.
@Suite(.serialized) struct MeshEarlyBytesRootTests {
    init() throws { try #require(getuid() == 0, "root tests need root") }

    /// Two endpoints on node-2 by the port name `echo`: one echoes (kemu/echo's TCP port 9000),
    /// the other names a port nothing listens on, so its node's dial is refused.
    static var manifest: String {
        let echo = { (name: String, port: Int) in
            "kind: Pod\nmetadata: {name: \(name), namespace: app, labels: {app: echo}}\nspec: {nodeName: node-2, "
                + "containers: [{name: echo, image: kemu/echo, ports: [{name: echo, containerPort: \(port)}]}]}"
        }
        return [
            "kind: Namespace\nmetadata: {name: app, labels: {kemu.dev/mesh: enabled}}",
            echo("good", 9000), echo("refusing", 9999),
            "kind: Service\nmetadata: {name: echo, namespace: app}\nspec: {selector: {app: echo}, ports: [{port: 9000, targetPort: echo}]}",
            "kind: Pod\nmetadata: {name: caller, namespace: app}\n"
                + "spec: {nodeName: node-1, containers: [{name: c, image: python, command: [sleep, \"3600\"]}]}",
        ].map { "apiVersion: v1\n" + $0 + "\n" }.joined(separator: "---\n")
    }

    /// `n` connections, each sending `size` random bytes at once (and then its end), reading
    /// the echo to the end; prints how many came back intact.
    static let sender = """
    import os, socket, sys
    ip, port, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    intact = 0
    for _ in range(n):
        body = os.urandom(size)
        try:
            s = socket.create_connection((ip, port), 5)
            s.settimeout(10)
            s.sendall(body)
            s.shutdown(socket.SHUT_WR)
            got = b''
            while True:
                chunk = s.recv(65536)
                if not chunk: break
                got += chunk
            intact += got == body
            s.close()
        except OSError as e:
            print('error', e)
    print(intact)
    """

    @Test func bytesSentBeforeTheAnswerReachAnotherEndpointWhenTheFirstRefuses() async throws {
        let c = TestCluster("rtearly")
        defer { c.release() }
        #expect(try await c.up().status == .exited(0))
        #expect(try await c.kubectl(["apply"], stdin: Self.manifest).status == .exited(0))
        for pod in ["good", "refusing", "caller"] {
            #expect(try await c.kubectl(["wait", "-n", "app", "--for=condition=Ready", "pod/\(pod)", "--timeout=60s"]).status == .exited(0))
        }
        let vip = try await c.kubectl(["get", "-n", "app", "svc/echo", "-o", "jsonpath={.spec.clusterIP}"]).output
        let send = { (count: Int, size: Int) in
            try await c.kemu(["exec", "-n", "app", "caller", "--", "python3", "-c", Self.sender, vip, "9000", "\(count)", "\(size)"]).output
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        #expect(try await eventually(20) { try await send(1, 100) == "1" })
        // Large first (200 KB: past the replay copy, and past a socket read), while the refusing
        // endpoint is still tried (its failures soon eject it); then small ones.
        let unreachable = { MeshRootTests.value(try await c.metrics("node-2"), "kemu_mesh_streams_unreachable_total") }
        let refusedBefore = try await unreachable()
        let large = try await send(20, 200_000)
        #expect(large == "20", "200 KB each: \(large)\n\(c.warnings())")
        let refused = try await unreachable() - refusedBefore
        #expect(refused >= 1, "the refusing endpoint was tried first for some connections")
        let small = try await send(20, 1_000)
        #expect(small == "20", "1 KB each: \(small)\n\(c.warnings())")
    }
}
