import Foundation
import Glibc
import KemuSystem
import Testing

/// A client run inside a pod (python3, as pods run the host's programs): `n` HTTP requests, one
/// connection each, to ip:port; prints how many each pod answered and how many failed as JSON.
/// With `KILL=pid:k` it kills that process (pods share the host's process table) after the k-th
/// request and goes straight on once it is dead, so the next connections race the endpoint's
/// removal. (A connection that reached the endpoint's accept queue in the instant it died is
/// reset, through any L4 proxy: the kill waits for the death so the test is about what follows.)
/// `HOLD=k` first opens k connections it keeps open to the end; with `HOLD_ASKS=1` each asks once
/// (keep-alive) and has its answer's head before the next opens, so every one reached a pod before the
/// loop starts. With `DURATION=s` it runs for that long instead, a request every 20 ms. `gap` is the longest
/// time (seconds) the client went without an answer: between two, and from the last to the end.
let requestLoop = """
import json, os, socket, sys, time
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
victim, at = (os.environ.get('KILL', '0:-1').split(':') + ['-1'])[:2]
def held():
    s = socket.create_connection((ip, port), 5)
    if os.environ.get('HOLD_ASKS') != '1': return s
    s.sendall(b'GET /?format=text HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')
    data = b''
    while b'\\r\\n\\r\\n' not in data:
        chunk = s.recv(65536)
        if not chunk: raise ConnectionError('a held connection was closed before its answer')
        data += chunk
    return s
hold = [held() for _ in range(int(os.environ.get('HOLD', '0')))]
counts, failures = {}, []
seconds = float(os.environ.get('DURATION', '0'))
# UNTIL_REPLACED=1: DURATION is the most; it ends sooner once the last 50 answers all came from
# pods that did not answer in the first second (a rollout done), after 8 s at least.
replaced, first, recent = os.environ.get('UNTIL_REPLACED') == '1', set(), []
start = time.time()
end, last, gap = start + seconds, start, 0.0
i = -1
while (i + 1 < n) if seconds == 0 else (time.time() < end):
    if replaced and len(recent) == 50 and time.time() > start + 8 and not first.intersection(recent): break
    i += 1
    if seconds: time.sleep(0.02)
    if i == int(at):
        os.kill(int(victim), 9)
        # Dead, its sockets closed, once reaped: a leader turns zombie while its other threads
        # still hold the sockets.
        while os.path.exists(f'/proc/{victim}'): pass
    try:
        s = socket.create_connection((ip, port), 5)
        s.sendall(b'GET /?format=text HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')
        data = b''
        while True:
            chunk = s.recv(65536)
            if not chunk: break
            data += chunk
        s.close()
        pod = data.split(b'\\r\\n\\r\\n', 1)[1].split()[0].decode().removeprefix('pod=')
        counts[pod] = counts.get(pod, 0) + 1
        gap, last = max(gap, time.time() - last), time.time()
        if time.time() < start + 1: first.add(pod)
        recent = (recent + [pod])[-50:]
    except Exception as e:
        failures.append(repr(e))
gap = max(gap, time.time() - last)
print(json.dumps({'counts': counts, 'failures': failures, 'gap': round(gap, 3)}))
"""

struct LoopResult: Decodable {
    var counts: [String: Int]
    var failures: [String]
    var gap: Double = 0
}

extension TestCluster {
    /// Runs `requestLoop` in `pod` against ip:port.
    func requests(from pod: String, to ip: String, _ port: Int, count: Int, environment: [String] = []) async throws -> LoopResult {
        let argv = ["exec", pod, "--", "env"] + environment + ["python3", "-c", requestLoop, ip, String(port), String(count)]
        let out = try await kemu(argv).output
        guard let result = try? JSONDecoder().decode(LoopResult.self, from: Data(out.utf8)) else {
            Issue.record("request loop in \(pod): \(out)")
            return LoopResult(counts: [:], failures: ["no result"], gap: .infinity)
        }
        return result
    }

    /// The pods of app=web: name, node, IP, process id.
    func webPods() async throws -> [(name: String, node: String, ip: String, pid: Int32)] { try await pods(app: "web") }

    /// The pods labelled app=`app`: name, node, IP, process id.
    func pods(app: String) async throws -> [(name: String, node: String, ip: String, pid: Int32)] {
        let text = try await jsonpath("pods", "{range .items[?(@.metadata.labels.app=='\(app)')]}{.metadata.name}={.spec.nodeName}={.status.podIP}={.status.containerStatuses[0].containerID} {end}")
        return text.split(separator: " ").map { $0.split(separator: "=").map(String.init) }.filter { $0.count == 4 }
            .map { ($0[0], $0[1], $0[2], Int32($0[3].replacingOccurrences(of: "kemu://", with: "")) ?? 0) }
    }

    /// Waits until the Service's EndpointSlice lists `count` ready endpoints.
    func readyEndpoints(_ service: String, namespace: String = "default", _ count: Int) async throws -> Bool {
        try await eventually(20) {
            let ready = try await kubectl(["get", "endpointslices", "-n", namespace, "-l", "kubernetes.io/service-name=\(service)",
                                           "-o", "jsonpath={.items[*].endpoints[*].conditions.ready}"]).output
            return ready.split(separator: " ").filter { $0 == "true" }.count == count
        }
    }

    /// Waits until a node's proxy balances the Service's (Cluster) port over `count` endpoints.
    func proxyServes(_ node: String, _ service: String, endpoints count: Int) async throws -> Bool {
        try await eventually(10) {
            try await metrics(node).split(separator: "\n").filter {
                $0.hasPrefix("kemu_proxy_endpoint_ejected{service=\"default/\(service)\"") && $0.contains("policy=\"Cluster\"")
            }.count == count
        }
    }

    /// A node's proxy metrics, read inside its namespace.
    func metrics(_ node: String) async throws -> String {
        try await runOff(["curl", "-sS", "--max-time", "5", "http://127.0.0.1:10249/metrics"], in: "kemu-\(name)-\(node)").output
    }
}

/// The sum of a metric's series whose labels contain every one of `labels`.
func metricSum(_ text: String, _ name: String, _ labels: [String] = []) -> Double {
    text.split(separator: "\n").filter { $0.hasPrefix(name + "{") && labels.allSatisfy($0.contains) }
        .compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }.reduce(0, +)
}

let webApp = """
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web}
spec:
  replicas: 3
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
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: http, nodePort: 30111}]
---
apiVersion: v1
kind: Pod
metadata: {name: client-1}
spec:
  nodeName: node-1
  containers: [{name: c, image: busybox, command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client-2}
spec:
  nodeName: node-2
  containers: [{name: c, image: busybox, command: [sleep, "3600"]}]

"""

/// The node proxy with real packets: Services reached from pods, nodes and the outside client,
/// balancing as configured, and failover that clients do not notice.
@Suite(.serialized, .enabled(if: isRoot, "creates network namespaces: run as root"))
struct ProxyRootTests {
    @Test func servicesAnswerFromEverywhereAndBalanceAsAsked() async throws {
        let c = TestCluster("rproxy")
        defer { c.release() }
        #expect(try await c.up().status == .exited(0))
        let extra = """
        apiVersion: v1
        kind: Service
        metadata: {name: sticky}
        spec:
          selector: {app: web}
          sessionAffinity: ClientIP
          ports: [{port: 80, targetPort: 8080}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: idle, annotations: {kemu.io/load-balancer: least-connections}}
        spec:
          selector: {app: web}
          ports: [{port: 80, targetPort: 8080}]

        """
        #expect(try await c.kubectl(["apply"], stdin: webApp + "---\n" + extra).status == .exited(0))
        #expect(try await c.readyEndpoints("web", 3))
        #expect(try await c.readyEndpoints("idle", 3))
        for node in ["node-1", "node-2"] { #expect(try await c.proxyServes(node, "web", endpoints: 3)) }
        let web = try await c.jsonpath("svc/web", "{.spec.clusterIP}")
        let pods = try await c.webPods()
        #expect(Set(pods.map(\.node)) == ["node-1", "node-2"])

        // The ClusterIP from a pod on each node, round robin: 30 connections, 10 to each pod.
        for client in ["client-1", "client-2"] {
            let result = try await c.requests(from: client, to: web, 80, count: 30)
            #expect(result.failures.isEmpty, "\(result.failures)")
            #expect(result.counts == Dictionary(uniqueKeysWithValues: pods.map { ($0.name, 10) }), "\(client): \(result.counts)")
        }
        // From a node itself, and the NodePort on every node from the outside client.
        let fromNode = try await c.kemu(["curl", "--from", "node-2", "http://\(web)/?format=text"])
        #expect(fromNode.output.hasPrefix("pod=web-"), "\(fromNode.output)")
        for nodeIP in ["172.31.0.11", "172.31.0.12"] {
            let answer = try await c.kemu(["curl", "--from", "client", "http://\(nodeIP):30111/?format=text"])
            #expect(answer.output.hasPrefix("pod=web-"), "\(nodeIP): \(answer.output)")
        }
        // Cluster DNS from inside pods: the search path finds `web`, the full name works with curl,
        // other zones are refused (no upstream here), headless-free names resolve to the ClusterIP.
        let lookup = "import socket\nfor n in ['web', 'web.default', 'web.default.svc.cluster.local']: print(socket.gethostbyname(n))\ntry:\n    socket.gethostbyname('example.com')\nexcept socket.gaierror as e:\n    print('refused')"
        let resolved = try await c.kemu(["exec", "client-2", "--", "python3", "-c", lookup])
        #expect(resolved.output == "\(web)\n\(web)\n\(web)\nrefused\n", "\(resolved.output)")
        // The same over TCP (what a resolver does after a truncated answer): length-prefixed.
        let overTCP = "import socket, struct\nq = b'\\x12\\x34\\x01\\x00\\x00\\x01' + b'\\x00' * 6 + b''.join(bytes([len(l)]) + l for l in b'web.default.svc.cluster.local'.split(b'.')) + b'\\x00\\x00\\x01\\x00\\x01'\ns = socket.create_connection(('10.96.0.10', 53), 3)\ns.sendall(struct.pack('>H', len(q)) + q)\nn = struct.unpack('>H', s.recv(2))[0]\nr = b''\nwhile len(r) < n: r += s.recv(n - len(r))\nprint('.'.join(map(str, r[-4:])))"
        let tcpAnswer = try await c.kemu(["exec", "client-1", "--", "python3", "-c", overTCP])
        #expect(tcpAnswer.output == "\(web)\n", "\(tcpAnswer.output)")
        let byName = try await c.kemu(["curl", "--from", "client-1", "http://web.default.svc.cluster.local/?format=text"])
        #expect(byName.output.hasPrefix("pod=web-"), "\(byName.output)")

        // A LoadBalancer Service: its ingress IP from the outside client, through the lb host and
        // a node's NodePort.
        let public_ = "apiVersion: v1\nkind: Service\nmetadata: {name: public}\nspec:\n  type: LoadBalancer\n  selector: {app: web}\n  ports: [{port: 8000, targetPort: 8080}]\n"
        #expect(try await c.kubectl(["apply"], stdin: public_).status == .exited(0))
        let lbIP = try await c.jsonpath("svc/public", "{.status.loadBalancer.ingress[0].ip}")
        #expect(lbIP.hasPrefix("172.31.1."), "\(lbIP)")
        #expect(try await eventually {
            try await c.kemu(["curl", "--from", "client", "http://\(lbIP):8000/?format=text"]).output.hasPrefix("pod=web-")
        })

        // externalTrafficPolicy Local: a healthCheckNodePort, answered by every node's proxy with
        // its count of local endpoints (503 without one).
        for (name, app) in [("local-lb", "web"), ("nobody", "none")] {
            let manifest = "apiVersion: v1\nkind: Service\nmetadata: {name: \(name)}\nspec:\n  type: LoadBalancer\n  externalTrafficPolicy: Local\n  selector: {app: \(app)}\n  ports: [{port: 8001, targetPort: 8080}]\n"
            #expect(try await c.kubectl(["apply"], stdin: manifest).status == .exited(0))
        }
        let onNode1 = pods.filter { $0.node == "node-1" }.count
        for (name, body, code) in [("local-lb", "\"localEndpoints\":\(onNode1),", "200"), ("nobody", "\"localEndpoints\":0,", "503")] {
            let port = try await c.jsonpath("svc/\(name)", "{.spec.healthCheckNodePort}")
            #expect(Int(port) != nil, "\(name): no healthCheckNodePort")
            #expect(try await eventually {
                let answer = try await runOff(["curl", "-sS", "-w", " %{http_code}", "http://172.31.0.11:\(port)/healthz"], in: "kemu-rproxy-client").output
                return answer.contains("\"name\":\"\(name)\"") && answer.contains(body) && answer.hasSuffix(" \(code)")
            }, "\(name)")
        }

        // ClientIP affinity: one client, one pod.
        let sticky = try await c.requests(from: "client-1", to: try await c.jsonpath("svc/sticky", "{.spec.clusterIP}"), 80, count: 12)
        #expect(sticky.failures.isEmpty && sticky.counts.count == 1 && sticky.counts.values.first == 12, "\(sticky)")
        // Least connections: with two connections held open (on two pods), every new one goes to
        // the third, idle pod.
        let idle = try await c.requests(from: "client-1", to: try await c.jsonpath("svc/idle", "{.spec.clusterIP}"), 80, count: 8, environment: ["HOLD=2"])
        #expect(idle.failures.isEmpty && idle.counts.count == 1 && idle.counts.values.first == 8, "\(idle)")

        // Scaling up: the new pod gets its share.
        #expect(try await c.kubectl(["scale", "rs/web", "--replicas=4"]).status == .exited(0))
        #expect(try await c.readyEndpoints("web", 4))
        #expect(try await c.proxyServes("node-2", "web", endpoints: 4))
        let scaled = try await c.requests(from: "client-2", to: web, 80, count: 40)
        let four = try await c.webPods()
        #expect(scaled.failures.isEmpty && scaled.counts == Dictionary(uniqueKeysWithValues: four.map { ($0.name, 10) }), "\(scaled.counts)")

        // The proxy's own view: listeners on the ClusterIP and NodePorts, health, metrics.
        let metrics = try await c.metrics("node-2")
        #expect(metricSum(metrics, "kemu_proxy_endpoint_connections_opened_total", ["service=\"default/web\""]) >= 70)
        // The EndpointSlice controller stamps each change, and proxies measure from the stamp.
        let trigger = try await c.kubectl(["get", "endpointslices", "-l", "kubernetes.io/service-name=web",
                                           "-o", "jsonpath={.items[0].metadata.annotations.endpoints\\.kubernetes\\.io/last-change-trigger-time}"]).output
        #expect(trigger.hasSuffix("Z") && trigger.contains("."), "\(trigger)")
        #expect(metrics.split(separator: "\n").contains { $0.hasPrefix("kubeproxy_network_programming_duration_seconds_count ") && !$0.hasSuffix(" 0") })
        let health = try await runOff(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:10256/healthz"], in: "kemu-rproxy-node-1")
        #expect(health.output == "200")
        // Every ClusterIP is local to the node through one route for the service range.
        let local = try await runOff(["ip", "route", "show", "table", "local"], in: "kemu-rproxy-node-1").output
        #expect(local.contains("local 10.96.0.0/16 dev lo"), "\(local)")
        // A deleted Service stops answering at once: its ClusterIP refuses connections.
        let stickyIP = try await c.jsonpath("svc/sticky", "{.spec.clusterIP}")
        #expect(try await c.kubectl(["delete", "svc", "sticky"]).status == .exited(0))
        #expect(try await eventually {
            try await c.requests(from: "client-1", to: stickyIP, 80, count: 1).failures.first?.contains("ConnectionRefusedError") == true
        })
    }

    @Test func failoverIsInvisibleToClients() async throws {
        let c = TestCluster("rfail")
        defer { c.release() }
        #expect(try await c.up().status == .exited(0))
        #expect(try await c.kubectl(["apply"], stdin: webApp).status == .exited(0))
        #expect(try await c.readyEndpoints("web", 3))
        #expect(try await c.proxyServes("node-1", "web", endpoints: 3))
        let web = try await c.jsonpath("svc/web", "{.spec.clusterIP}")
        var pods = try await c.webPods()

        // kill -9 of one endpoint's process in the middle of a stream of connections: none fails.
        let victim = pods[0]
        let killed = try await c.requests(from: "client-1", to: web, 80, count: 150, environment: ["KILL=\(victim.pid):30"])
        #expect(killed.failures.isEmpty, "\(killed.failures)")
        #expect(killed.counts.values.reduce(0, +) == 150)
        // (Whether a connection reached the dead endpoint before the proxy dropped it is a race;
        // the black hole below makes the retry path certain.)
        #expect(try await c.readyEndpoints("web", 3))
        #expect(try await c.proxyServes("node-1", "web", endpoints: 3))

        // A black hole: one pod drops every connection that does not come from its own node, so
        // connects to it from node-1 time out while its node's readiness probes still pass (a link
        // taken down instead races the probes: three failed ones take the endpoint out before any
        // connection tries it). Connections go elsewhere after the first dial timeout, and the
        // endpoint is ejected.
        pods = try await c.webPods()
        let hole = pods.first { $0.node == "node-2" }!
        let uid = try await c.jsonpath("pod/\(hole.name)", "{.metadata.uid}")
        let podNamespace = "kemu-rfail-p-\(hole.name)-\(uid.prefix(8))"
        let drop = "table inet kemuhole { chain input { type filter hook input priority 0; ip saddr != 10.244.2.0/24 tcp dport 8080 drop; }; }"
        #expect(try await runOff(["nft", drop], in: podNamespace).status == .exited(0))
        let around = try await c.requests(from: "client-1", to: web, 80, count: 30)
        #expect(around.failures.isEmpty, "\(around.failures)")
        #expect(around.counts[hole.name] == nil && around.counts.values.reduce(0, +) == 30, "\(around.counts)")
        let metrics = try await c.metrics("node-1")
        #expect(metricSum(metrics, "kemu_proxy_endpoint_connect_failures_total", ["pod=\"default/\(hole.name)\""]) >= 1)
        #expect(metricSum(metrics, "kemu_proxy_connect_retries_total", ["service=\"default/web\""]) >= 1)
        #expect(try await c.readyEndpoints("web", 3), "the hole's own node still finds it ready")
        #expect(try await runOff(["nft", "delete", "table", "inet", "kemuhole"], in: podNamespace).status == .exited(0))

        // A port already taken on a node: that node's proxy says so, the other serves it, and
        // every other Service keeps working.
        let squatter = try TCP.listen(in: "kemu-rfail-node-1", "172.31.0.11", 30222)
        defer { close(squatter) }
        let taken = """
        apiVersion: v1
        kind: Service
        metadata: {name: taken}
        spec:
          type: NodePort
          selector: {app: web}
          ports: [{port: 80, targetPort: 8080, nodePort: 30222}]

        """
        #expect(try await c.kubectl(["apply"], stdin: taken).status == .exited(0))
        #expect(await eventually {
            ((try? FileSystem.readFile("\(c.state)/proxy-node-1.log")) ?? "").contains("cannot listen on 172.31.0.11:30222")
        })
        let viaNode2 = try await c.kemu(["curl", "--from", "client", "http://172.31.0.12:30222/?format=text"])
        #expect(viaNode2.output.hasPrefix("pod=web-"), "\(viaNode2.output)")
        #expect(try await c.requests(from: "client-1", to: web, 80, count: 6).failures.isEmpty)

        // The proxy stopped alone (`kemu stop proxy`, SIGKILL): the pods keep running, the
        // Service is refused from node-1 until `kemu start proxy`; both are Events on the node.
        #expect(try await c.kemu(["stop", "proxy", "--signal", "KILL", "node-1"]).status == .exited(0))
        let down = try await c.requests(from: "client-1", to: web, 80, count: 1)
        #expect(down.failures.count == 1)
        let stoppedTwice = try await c.kemu(["stop", "proxy", "node-1"])
        #expect(stoppedTwice.status != .exited(0) && stoppedTwice.output.contains("the proxy of node-1 is not running"), "\(stoppedTwice.output)")
        #expect(try await c.kemu(["start", "proxy", "node-1"]).status == .exited(0))
        #expect(try await eventually(10) { try await c.requests(from: "client-1", to: web, 80, count: 1).failures.isEmpty })
        let again = try await c.requests(from: "client-1", to: web, 80, count: 9)
        #expect(again.failures.isEmpty && again.counts.count == 3, "\(again)")
        let reasons = try await c.kubectl(["get", "events", "--field-selector", "involvedObject.name=node-1,source=kemu-chaos", "-o", "jsonpath={.items[*].reason}"]).output
        #expect(reasons.split(separator: " ").sorted() == ["ChaosProxyStarted", "ChaosProxyStopped"], "\(reasons)")
        // A second proxy for the same node is refused before it opens any Service port.
        let second = try await c.kemu(["proxy", "--node", "node-1"])
        #expect(second.status != .exited(0) && second.output.contains("is another proxy serving this node?"), "\(second.output)")
        #expect(try await c.requests(from: "client-1", to: web, 80, count: 6).counts.values.reduce(0, +) == 6)
    }

    @Test func anExhaustedLoadBalancerPoolLeavesTheServicePendingWithAnEvent() async throws {
        let c = TestCluster("rlbpool")
        defer { c.release() }
        // Two usable addresses: 172.31.1.1 and .2.
        #expect(try await c.up(config: "nodes: 1\nnetwork:\n  loadBalancerPool: 172.31.1.0/30\n").status == .exited(0))
        let services = (1...3).map { "apiVersion: v1\nkind: Service\nmetadata: {name: lb\($0)}\nspec:\n  type: LoadBalancer\n  ports: [{port: 80}]\n" }
        for s in services { #expect(try await c.kubectl(["apply"], stdin: s).status == .exited(0)) }
        let addresses = try await c.jsonpath("svc", "{range .items[*]}{.metadata.name}={.status.loadBalancer.ingress[0].ip} {end}")
        let ips = Set(addresses.split(separator: " ").compactMap { $0.split(separator: "=").dropFirst().first.map(String.init) })
        #expect(ips == ["172.31.1.1", "172.31.1.2"] && addresses.hasSuffix("lb3= "), "\(addresses)")
        let events = { (name: String) in
            try await c.kubectl(["get", "events", "--field-selector", "involvedObject.name=\(name)", "-o", "jsonpath={.items[*].reason}: {.items[*].message}"]).output
        }
        #expect(try await eventually { try await events("lb3").hasPrefix("SyncLoadBalancerFailed: no free address in the load-balancer pool 172.31.1.0/30") })
        #expect(try await eventually { try await events("lb1").hasPrefix("EnsuredLoadBalancer") })
        #expect(try await c.kubectl(["get", "svc", "lb3"]).output.contains("<pending>"))
    }
}
