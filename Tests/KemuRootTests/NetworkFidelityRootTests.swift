import Foundation
import Glibc
import KemuSystem
import Testing

/// A UDP client run inside a pod: `flows` sockets (each its own flow through the proxy), each
/// sending "?" every 20 ms for `rounds` rounds and waiting up to 300 ms for the answer (which
/// names the pod that answered). With `PIDS=name=pid,…` it kills (-9) the pod answering flow 0
/// after round `KILL_AT`, waits until the process is gone, and goes on. Prints, as JSON, each
/// flow's lost datagrams and the pods that answered it in order.
let datagramLoop = """
import json, os, socket, sys, time
ip, port, flows, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
pids = dict(p.split('=') for p in os.environ.get('PIDS', '').split(',') if p)
kill_at = int(os.environ.get('KILL_AT', '-1'))
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(flows)]
for s in socks: s.settimeout(0.3)
lost, order, clients, killed = [0] * flows, [[] for _ in range(flows)], set(), None
for r in range(rounds):
    if r == kill_at and order[0]:
        killed = order[0][-1]
        os.kill(int(pids[killed]), 9)
        while os.path.exists('/proc/' + pids[killed]): pass
    for i, s in enumerate(socks):
        s.sendto(b'?', (ip, port))
        try:
            fields = dict(f.split('=', 1) for f in s.recv(2000).decode().split())
            if not order[i] or order[i][-1] != fields['pod']: order[i].append(fields['pod'])
            clients.add(fields['client'].split(':')[0])
        except socket.timeout:
            lost[i] += 1
    time.sleep(0.02)
print(json.dumps({'lost': lost, 'order': order, 'clients': sorted(clients), 'killed': killed}))
"""

struct DatagramLoopResult: Decodable {
    var lost: [Int]
    var order: [[String]]
    var clients: [String]
    var killed: String?
}

let fidelityApp = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 3
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
      - name: echo
        image: kemu/echo
        ports: [{name: http, containerPort: 8080}, {name: udp, containerPort: 9000, protocol: UDP}]
        readinessProbe: {httpGet: {path: /readyz, port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  type: NodePort
  selector: {app: echo}
  ports:
  - {name: http, port: 80, targetPort: http, nodePort: 30180}
  - {name: udp, port: 53, targetPort: udp, protocol: UDP, nodePort: 30153}
---
apiVersion: v1
kind: Service
metadata: {name: echo-local}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: echo}
  ports:
  - {name: http, port: 80, targetPort: http, nodePort: 30181}
  - {name: udp, port: 53, targetPort: udp, protocol: UDP, nodePort: 30154}
---
apiVersion: v1
kind: Pod
metadata: {name: client-1}
spec:
  nodeName: node-1
  containers: [{name: c, image: busybox, command: [sleep, "3600"]}]

"""

/// What a network engineer checks first: endpoints see their real clients, UDP Services work
/// and fail over like conntrack-backed ones.
@Suite(.serialized) struct NetworkFidelityRootTests {
    init() throws { try #require(getuid() == 0, "root tests need root") }

    @Test func endpointsSeeTheirClientsAddressesAndUDPServicesFailOver() async throws {
        let c = TestCluster("rfidel")
        defer { c.down() }
        #expect(try await c.up().status == .exited(0))
        #expect(try await c.kubectl(["apply"], stdin: fidelityApp).status == .exited(0))
        #expect(try await c.readyEndpoints("echo", 3))
        #expect(try await c.kubectl(["wait", "--for=condition=Ready", "pod/client-1", "--timeout=60s"]).status == .exited(0))
        let clientIP = try await c.jsonpath("pod/client-1", "{.status.podIP}")
        let clusterIP = try await c.jsonpath("svc/echo", "{.spec.clusterIP}")
        let pods = try await c.pods(app: "echo")
        #expect(pods.count == 3)

        // ClusterIP from a pod: every endpoint, on this node and the other, sees the pod's address.
        var answered: Set<String> = []
        for _ in 0..<9 {
            let text = try await c.kubectl(["exec", "client-1", "--", "wget", "-qO-", "http://\(clusterIP)/?format=text"]).output
            let fields = Self.fields(text)
            #expect(fields["client"]?.hasPrefix(clientIP + ":") == true, "\(text)")
            answered.insert(fields["pod"] ?? "")
        }
        #expect(answered == Set(pods.map(\.name)))

        // NodePort with externalTrafficPolicy Local from the outside client: its own address; with
        // Cluster, the node's (masqueraded, as upstream).
        let node1Pods = pods.filter { $0.node == "node-1" }.count
        if node1Pods > 0 {
            let local = try await c.kemu(["curl", "--from", "client", "http://172.31.0.11:30181/?format=text"]).output
            #expect(Self.fields(local)["client"]?.hasPrefix("172.31.0.3:") == true, "\(local)")
        }
        let cluster = try await c.kemu(["curl", "--from", "client", "http://172.31.0.11:30180/?format=text"]).output
        let masqueraded = Self.fields(cluster)["client"] ?? ""
        #expect(!masqueraded.hasPrefix("172.31.0.3:") && !masqueraded.isEmpty, "\(cluster)")

        // A pod reaching itself through its Service (hairpin) is answered, from the node's address.
        let own = pods[0]
        var hairpin = ""
        for _ in 0..<30 where hairpin.isEmpty {
            let text = try await c.kubectl(["exec", own.name, "--", "wget", "-qO-", "-T", "3", "http://\(clusterIP)/?format=text"]).output
            if Self.fields(text)["pod"] == own.name { hairpin = text }
        }
        #expect(!hairpin.isEmpty && Self.fields(hairpin)["client"]?.hasPrefix(own.ip + ":") == false, "\(hairpin)")

        // UDP: the ClusterIP from a pod keeps its address; a NodePort with Local from outside too.
        let udp = try await datagrams(c, from: "client-1", to: clusterIP, 53, flows: 2, rounds: 5)
        #expect(udp.lost == [0, 0] && udp.clients == [clientIP], "\(udp)")
        if node1Pods > 0 {
            let outside = try await runOff(["python3", "-c", datagramLoop, "172.31.0.11", "30154", "1", "3"], in: "kemu-\(c.name)-client")
            #expect(outside.output.contains("\"clients\": [\"172.31.0.3\"]") && outside.output.contains("\"lost\": [0]"), "\(outside.output)")
        }

        // kill -9 of the endpoint of a flow under a datagram loop: at most one datagram lost per
        // flow, the flow goes on with another endpoint.
        let pids = pods.map { "\($0.name)=\($0.pid)" }.joined(separator: ",")
        let failover = try await datagrams(c, from: "client-1", to: clusterIP, 53, flows: 3, rounds: 60, environment: ["PIDS=\(pids)", "KILL_AT=20"])
        #expect(failover.killed != nil && failover.lost.allSatisfy { $0 <= 1 }, "\(failover)")
        #expect(failover.order[0].count >= 2 && failover.order[0].last != failover.killed, "\(failover)")
        for flow in failover.order { #expect(flow.last != failover.killed, "\(failover)") }
    }

    static func fields(_ text: String) -> [String: String] {
        Dictionary(text.split(separator: " ").compactMap { word -> (String, String)? in
            let parts = word.split(separator: "=", maxSplits: 1)
            return parts.count == 2 ? (String(parts[0]), String(parts[1]).trimmingCharacters(in: .whitespacesAndNewlines)) : nil
        }, uniquingKeysWith: { a, _ in a })
    }

    func datagrams(_ c: TestCluster, from pod: String, to ip: String, _ port: Int, flows: Int, rounds: Int,
                   environment: [String] = []) async throws -> DatagramLoopResult {
        let argv = ["exec", pod, "--", "env"] + environment + ["python3", "-c", datagramLoop, ip, String(port), String(flows), String(rounds)]
        let out = try await c.kemu(argv).output
        guard let result = try? JSONDecoder().decode(DatagramLoopResult.self, from: Data(out.utf8)) else {
            Issue.record("datagram loop in \(pod): \(out)")
            return DatagramLoopResult(lost: [-1], order: [], clients: [], killed: nil)
        }
        return result
    }
}
