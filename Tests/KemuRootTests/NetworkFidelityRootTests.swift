import Foundation
import Glibc
import KemuSystem
import Testing

/// A UDP client run inside a pod: `flows` sockets (each its own flow through the proxy), each
/// sending "?" every 20 ms for `rounds` rounds and waiting up to 1 s for the answer (which
/// names the pod that answered). With `PIDS=name=pid,…` it kills (-9) the pod answering flow 0
/// after round `KILL_AT`, waits until the process is gone, and goes on. Prints, as JSON, each
/// flow's lost datagrams and the pods that answered it in order.
let datagramLoop = """
import json, os, socket, sys, time
ip, port, flows, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
pids = dict(p.split('=') for p in os.environ.get('PIDS', '').split(',') if p)
kill_at = int(os.environ.get('KILL_AT', '-1'))
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(flows)]
for s in socks: s.settimeout(1.0)
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
metadata:
  name: echo
  annotations:
    balancer.linkerd.io/failure-accrual: consecutive
    balancer.linkerd.io/failure-accrual-consecutive-max-failures: "1"
    balancer.linkerd.io/failure-accrual-consecutive-min-penalty: 60s
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
        defer { c.release() }
        #expect(try await c.up(config: "nodes: 2\nzones: {zone-a: [node-1], zone-b: [node-2]}\n").status == .exited(0))
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

        // A Fault drops datagrams as it resets connections; gone, they flow again.
        #expect(try await c.kemu(["fault", "add", "udpdrop", "--service", "echo", "--abort", "100"]).status == .exited(0))
        #expect(try await eventually(10) { try await datagrams(c, from: "client-1", to: clusterIP, 53, flows: 1, rounds: 3).lost == [3] })
        #expect(try await c.kemu(["fault", "delete", "udpdrop"]).status == .exited(0))
        #expect(try await eventually(10) { try await datagrams(c, from: "client-1", to: clusterIP, 53, flows: 1, rounds: 3).lost == [0] })

        // A user's own DNS server behind a UDP Service answers through it, and the cluster DNS
        // still answers beside it.
        #expect(try await c.kubectl(["apply"], stdin: Self.userDNS).status == .exited(0))
        #expect(try await c.readyEndpoints("mydns", 1))
        #expect(try await c.proxyServes("node-1", "mydns", endpoints: 1))
        let mydns = try await c.jsonpath("svc/mydns", "{.spec.clusterIP}")
        let asked = try await c.kubectl(["exec", "client-1", "--", "python3", "-c", Self.dnsQuery, mydns]).output
        #expect(asked.hasPrefix("192.0.2.53"), "\(asked)")
        let byName = try await c.kubectl(["exec", "client-1", "--", "python3", "-c", "import socket; print(socket.gethostbyname('mydns'))"]).output
        #expect(byName.trimmingCharacters(in: .whitespacesAndNewlines) == mydns, "\(byName)")

        // kill -9 of the endpoint of a flow under a datagram loop: at most one datagram lost per
        // flow, the flow goes on with another endpoint. (The pod's container restarts in place
        // at once, same name and address: the Service's failure accrual at one failure keeps
        // new flows off it, else the next flow may go back to it, as with kube-proxy.)
        let pids = pods.map { "\($0.name)=\($0.pid)" }.joined(separator: ",")
        let failover = try await datagrams(c, from: "client-1", to: clusterIP, 53, flows: 3, rounds: 60, environment: ["PIDS=\(pids)", "KILL_AT=20"])
        #expect(failover.killed != nil && failover.lost.allSatisfy { $0 <= 1 }, "\(failover)")
        #expect(failover.order[0].count >= 2 && failover.order[0].last != failover.killed, "\(failover)")
        for flow in failover.order { #expect(flow.last != failover.killed, "\(failover)") }

        // p2c-ewma weighs endpoints by their time to first response byte: one that answers in
        // 500 ms (a slow app, not a slow connect) loses its share to two fast ones. (At 200 ms, a
        // loaded suite run, its pods at nice 10, once made a fast one look as slow: 11 of 60.)
        #expect(try await c.kubectl(["apply"], stdin: Self.slowAndFast).status == .exited(0))
        #expect(try await c.readyEndpoints("p2c", 3))
        #expect(try await c.proxyServes("node-1", "p2c", endpoints: 3))
        let p2c = try await c.jsonpath("svc/p2c", "{.spec.clusterIP}")
        let shares = try await c.requests(from: "client-1", to: p2c, 80, count: 60)
        #expect(shares.failures.isEmpty && shares.counts.values.reduce(0, +) == 60, "\(shares)")
        #expect((shares.counts["slow"] ?? 0) <= 6, "round robin gives it 20 of 60: \(shares.counts)")
        // The same pods round robin: the slow one answers its third.
        let rr = try await c.jsonpath("svc/rr", "{.spec.clusterIP}")
        let turns = try await c.requests(from: "client-1", to: rr, 80, count: 30)
        #expect(turns.failures.isEmpty && turns.counts["slow"] == 10, "\(turns)")

        // Topology: nodes carry their zones from cluster.yaml; PreferSameNode keeps a client on
        // its node's endpoint while it is ready, PreferClose on its zone's, and both fall back
        // to the rest when there is none.
        #expect(try await c.jsonpath("node/node-2", "{.metadata.labels.topology\\.kubernetes\\.io/zone}") == "zone-b")
        #expect(try await c.kubectl(["apply"], stdin: Self.nearAndFar).status == .exited(0))
        for service in ["same-node", "same-zone"] {
            #expect(try await c.readyEndpoints(service, 2))
            let hints = try await c.kubectl(["get", "endpointslices", "-l", "kubernetes.io/service-name=\(service)", "-o", "jsonpath={.items[*].endpoints[*].hints.forZones[*].name}"]).output
            #expect(hints.split(separator: " ").sorted() == ["zone-a", "zone-b"], "\(service): \(hints)")
            #expect(try await eventually(10) {
                let ip = try await c.jsonpath("svc/\(service)", "{.spec.clusterIP}")
                return try await c.requests(from: "client-1", to: ip, 80, count: 12).counts == ["near": 12]
            }, "\(service)")
        }
        #expect(try await c.kubectl(["delete", "pod", "near", "--wait=false"]).status == .exited(0))
        for service in ["same-node", "same-zone"] {
            let ip = try await c.jsonpath("svc/\(service)", "{.spec.clusterIP}")
            #expect(try await eventually(15) { try await c.requests(from: "client-1", to: ip, 80, count: 6).counts == ["far": 6] }, "\(service)")
        }

        // externalTrafficPolicy Local on a node with no endpoint of the Service's ("far", on
        // node-2, is the only one left): node-1's NodePort refuses the outside client, but a pod
        // reaches the endpoint elsewhere, its own address kept, as kube-proxy sends in-cluster
        // traffic on with Cluster semantics.
        #expect(try await c.kubectl(["apply"], stdin: Self.farLocal).status == .exited(0))
        #expect(try await eventually(15) {
            let onItsNode = try await c.kemu(["curl", "--from", "client", "http://172.31.0.12:30182/?format=text"]).output
            return Self.fields(onItsNode)["pod"] == "far" && Self.fields(onItsNode)["client"]?.hasPrefix("172.31.0.3:") == true
        }, "node-2's NodePort, from outside")
        var fromPod = ""
        #expect(try await eventually(15) {
            fromPod = try await c.kubectl(["exec", "client-1", "--", "wget", "-qO-", "-T", "5", "http://172.31.0.11:30182/?format=text"]).output
            return Self.fields(fromPod)["pod"] == "far" && Self.fields(fromPod)["client"]?.hasPrefix(clientIP + ":") == true
        }, "node-1's NodePort, from a pod: \(fromPod)")
        let outside = try await c.kemu(["curl", "--from", "client", "http://172.31.0.11:30182/?format=text", "--", "--max-time", "3"])
        #expect(outside.status != .exited(0) && !outside.output.contains("pod=far"), "\(outside.output)")
    }

    /// A NodePort Service with `externalTrafficPolicy: Local` for the pods of `nearAndFar`.
    static let farLocal = """
    apiVersion: v1
    kind: Service
    metadata: {name: far-local}
    spec:
      type: NodePort
      externalTrafficPolicy: Local
      selector: {place: test}
      ports: [{port: 80, targetPort: 8080, nodePort: 30182}]
    """

    /// An echo pod on each node behind two Services: one preferring the client's node, one its zone.
    static let nearAndFar = ["same-node": "PreferSameNode", "same-zone": "PreferClose"].sorted { $0.key < $1.key }.map { name, distribution in
        "apiVersion: v1\nkind: Service\nmetadata: {name: \(name)}\nspec:\n  selector: {place: test}\n  trafficDistribution: \(distribution)\n  ports: [{port: 80, targetPort: 8080}]\n---\n"
    }.joined() + [("near", "node-1"), ("far", "node-2")].map { pod, node in
        "apiVersion: v1\nkind: Pod\nmetadata: {name: \(pod), labels: {place: test}}\nspec:\n  nodeName: \(node)\n  containers: [{name: echo, image: kemu/echo, readinessProbe: {httpGet: {path: /readyz, port: 8080}, periodSeconds: 1}}]\n"
    }.joined(separator: "---\n")

    /// A DNS server of the user's: every A query answered 192.0.2.53, on UDP 53.
    static let userDNS = """
    apiVersion: v1
    kind: Service
    metadata: {name: mydns}
    spec:
      selector: {app: mydns}
      ports: [{name: dns, port: 53, protocol: UDP}]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: mydns, labels: {app: mydns}}
    spec:
      containers:
      - name: dns
        image: python
        command: [python3, -c]
        args:
        - |
          import socket
          s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('', 53))
          while True:
              q, peer = s.recvfrom(512)
              if len(q) < 12: continue
              answer = b'\\xc0\\x0c\\x00\\x01\\x00\\x01\\x00\\x00\\x00\\x05\\x00\\x04' + bytes([192, 0, 2, 53])
              s.sendto(q[:2] + b'\\x81\\x80' + q[4:6] + b'\\x00\\x01\\x00\\x00\\x00\\x00' + q[12:] + answer, peer)
        readinessProbe: {exec: {command: ["true"]}, periodSeconds: 1}
    """

    /// An A query for example.test to the address given, over UDP, asked up to three times 2 s
    /// apart as a resolver does (the server may bind a moment after its pod turns ready); prints
    /// the answer's address.
    static let dnsQuery = """
    import socket, sys
    q = b'\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x07example\\x04test\\x00\\x00\\x01\\x00\\x01'
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
    for attempt in range(3):
        s.sendto(q, (sys.argv[1], 53))
        try:
            r = s.recv(512); break
        except TimeoutError:
            if attempt == 2: raise
    print('.'.join(map(str, r[-4:])))
    """

    /// Two kemu-echo pods and a python server that takes 200 ms per answer, behind a p2c-ewma
    /// Service.
    static let slowAndFast = """
    apiVersion: v1
    kind: Service
    metadata: {name: p2c, annotations: {kemu.io/load-balancer: p2c-ewma}}
    spec:
      selector: {p2c: "on"}
      ports: [{port: 80, targetPort: 8080}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: rr}
    spec:
      selector: {p2c: "on"}
      ports: [{port: 80, targetPort: 8080}]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: slow, labels: {p2c: "on"}}
    spec:
      containers:
      - name: slow
        image: python
        command: [python3, -c]
        args:
        - |
          import http.server, socket, time
          class H(http.server.BaseHTTPRequestHandler):
              def do_GET(self):
                  time.sleep(0.5)
                  body = ('pod=' + socket.gethostname() + '\\n').encode()
                  self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)
          http.server.ThreadingHTTPServer(('', 8080), H).serve_forever()
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
    \((1...2).map { "---\napiVersion: v1\nkind: Pod\nmetadata: {name: fast-\($0), labels: {p2c: \"on\"}}\nspec:\n  containers: [{name: echo, image: kemu/echo}]\n" }.joined())
    """

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
