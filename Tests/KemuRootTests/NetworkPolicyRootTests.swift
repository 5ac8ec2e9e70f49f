import Foundation
import Glibc
import KemuSystem
import Testing

/// Upstream's NetworkPolicy truth tables (test/e2e/network/netpol): namespaces x, y, z, pods a,
/// b, c in each, serving TCP and UDP on ports 80 and 81, a Service per pod. For each policy the
/// whole matrix is probed — pod to pod and pod to Service — and compared with what upstream
/// expects, and `kemu policy trace` must say the same in every cell.
@Suite(.serialized) struct NetworkPolicyRootTests {
    init() throws { try #require(getuid() == 0, "root tests need root") }

    static let namespaces = ["x", "y", "z"]
    static let pods = ["a", "b", "c"]
    /// (port, protocol) of every probe.
    static let ports: [(UInt16, String)] = [(80, "TCP"), (81, "TCP"), (80, "UDP"), (81, "UDP")]

    struct Peer: Hashable, CustomStringConvertible {
        var namespace: String
        var pod: String
        var description: String { "\(namespace)/\(pod)" }
    }

    static var peers: [Peer] { namespaces.flatMap { ns in pods.map { Peer(namespace: ns, pod: $0) } } }

    static var world: String {
        var docs: [String] = []
        for ns in namespaces {
            // Quoted: YAML reads a bare y as true.
            docs.append("apiVersion: v1\nkind: Namespace\nmetadata: {name: \"\(ns)\", labels: {ns: \"\(ns)\"}}\n")
            for pod in pods {
                func container(_ port: Int) -> String {
                    """
                      - name: c\(port)
                        image: kemu/echo
                        args: [--port, "\(port)", --tcp-port, "0", --udp-port, "\(port)"]
                        ports: [{name: serve-\(port)-tcp, containerPort: \(port)}, {name: serve-\(port)-udp, containerPort: \(port), protocol: UDP}]
                    """
                }
                docs.append("apiVersion: v1\nkind: Pod\nmetadata: {name: \(pod), namespace: \"\(ns)\", labels: {pod: \(pod)}}\nspec:\n  containers:\n\(container(80))\n\(container(81))\n")
                docs.append("""
                    apiVersion: v1
                    kind: Service
                    metadata: {name: s-\(pod), namespace: "\(ns)"}
                    spec:
                      selector: {pod: \(pod)}
                      ports:
                      - {name: p80-tcp, port: 80}
                      - {name: p81-tcp, port: 81}
                      - {name: p80-udp, port: 80, protocol: UDP}
                      - {name: p81-udp, port: 81, protocol: UDP}

                    """)
            }
        }
        return docs.joined(separator: "---\n")
    }

    /// Runs inside a pod: probes every target given as JSON [[key, ip, port, proto]] at once
    /// (a thread each); prints {key: reached}. A drop is silence: a TCP probe waits 1.5 s, a UDP
    /// one sends three datagrams 750 ms apart (two, 1.5 s, once went unanswered under the full
    /// suite's load). Each datagram
    /// goes from a port of its own (argv[2] + its index; the caller gives each case its own
    /// range): from a random one, a probe that happened on the port the same probe used in the
    /// case before was a reply to a flow conntrack still knew, allowed as established.
    static let probe = """
    import json, socket, sys, threading
    targets, result, first = json.loads(sys.argv[1]), {}, int(sys.argv[2])
    def reach(key, ip, port, proto, index):
        port = int(port)
        try:
            if proto == 'TCP':
                s = socket.create_connection((ip, port), 1.5)
                s.settimeout(1.5)
                s.sendall(b'GET /?format=text HTTP/1.0\\r\\n\\r\\n')
                result[key] = len(s.recv(100)) > 0
            else:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(('', first + index))
                s.settimeout(0.75)
                ok = False
                for _ in range(3):
                    s.sendto(b'?', (ip, port))
                    try:
                        ok = len(s.recv(200)) > 0
                        break
                    except socket.timeout:
                        pass
                result[key] = ok
        except Exception:
            result[key] = False
    threads = [threading.Thread(target=reach, args=t + [i]) for i, t in enumerate(targets)]
    for t in threads: t.start()
    for t in threads: t.join()
    print(json.dumps(result))
    """

    @Test func theUpstreamTruthTablesHoldPodToPodAndThroughServicesAndTraceAgrees() async throws {
        let c = TestCluster("rnetpol")
        defer { c.release() }
        // The default 5 s node grace: nine probes of 72 threads at once on 2 cores once held
        // node-1's Lease renewal past it, judged by the agent's own stamps (its pods went unready
        // and their Services rejected connections); silence is now the controller's own count.
        #expect(try await c.up().status == .exited(0))
        let applied = try await c.kubectl(["apply"], stdin: Self.world)
        try #require(applied.status == .exited(0), "\(applied.output)")
        for ns in Self.namespaces {
            try #require(try await c.kubectl(["wait", "-n", ns, "--for=condition=Ready", "pod", "--all", "--timeout=90s"]).status == .exited(0))
        }
        var podIPs: [Peer: String] = [:], serviceIPs: [Peer: String] = [:]
        for peer in Self.peers {
            podIPs[peer] = try await c.kubectl(["get", "-n", peer.namespace, "pod/\(peer.pod)", "-o", "jsonpath={.status.podIP}"]).output
            serviceIPs[peer] = try await c.kubectl(["get", "-n", peer.namespace, "svc/s-\(peer.pod)", "-o", "jsonpath={.spec.clusterIP}"]).output
        }
        for peer in Self.peers { #expect(try await c.readyEndpoints("s-\(peer.pod)", namespace: peer.namespace, 1)) }
        let yb = podIPs[Peer(namespace: "y", pod: "b")] ?? ""
        let xa = Peer(namespace: "x", pod: "a")

        // (name, policy manifest, expected reachability: source, destination, port, protocol)
        let cases: [(String, String?, (Peer, Peer, UInt16, String) -> Bool)] = [
            ("no policy", nil, { _, _, _, _ in true }),
            ("default-deny ingress in x", """
                apiVersion: networking.k8s.io/v1
                kind: NetworkPolicy
                metadata: {name: deny-ingress, namespace: x}
                spec: {podSelector: {}, policyTypes: [Ingress]}
                """, { s, d, _, _ in s == d || d.namespace != "x" }),
            ("default-deny egress in x, DNS allowed", """
                apiVersion: networking.k8s.io/v1
                kind: NetworkPolicy
                metadata: {name: deny-egress, namespace: x}
                spec:
                  podSelector: {}
                  policyTypes: [Egress]
                  egress: [{ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]}]
                """, { s, d, _, _ in s == d || s.namespace != "x" }),
            ("namespace isolation of y", """
                apiVersion: networking.k8s.io/v1
                kind: NetworkPolicy
                metadata: {name: same-namespace, namespace: "y"}
                spec: {podSelector: {}, ingress: [{from: [{podSelector: {}}]}]}
                """, { s, d, _, _ in d.namespace != "y" || s.namespace == "y" }),
            ("ipBlock with except", """
                apiVersion: networking.k8s.io/v1
                kind: NetworkPolicy
                metadata: {name: block, namespace: x}
                spec:
                  podSelector: {matchLabels: {pod: a}}
                  ingress: [{from: [{ipBlock: {cidr: 10.244.0.0/16, except: ["\(yb)/32"]}}]}]
                """, { s, d, _, _ in !(d == xa && s == Peer(namespace: "y", pod: "b")) }),
            ("named port", """
                apiVersion: networking.k8s.io/v1
                kind: NetworkPolicy
                metadata: {name: named, namespace: x}
                spec:
                  podSelector: {matchLabels: {pod: a}}
                  ingress: [{ports: [{port: serve-81-tcp}]}]
                """, { s, d, port, proto in s == d || d != xa || (port == 81 && proto == "TCP") }),
            ("endPort", """
                apiVersion: networking.k8s.io/v1
                kind: NetworkPolicy
                metadata: {name: range, namespace: x}
                spec:
                  podSelector: {matchLabels: {pod: a}}
                  ingress: [{ports: [{port: 80, endPort: 81, protocol: UDP}]}]
                """, { s, d, _, proto in s == d || d != xa || proto == "UDP" }),
        ]
        for (round, (name, manifest, expected)) in cases.enumerated() {
            var policyName: (String, String)?
            if let manifest {
                #expect(try await c.kubectl(["apply"], stdin: manifest).status == .exited(0), "\(name)")
                let meta = manifest.components(separatedBy: "metadata: {name: ")[1].split(separator: "}")[0].replacingOccurrences(of: "\"", with: "")
                    .components(separatedBy: ", namespace: ")
                policyName = (meta[1], meta[0])
                #expect(try await policyApplied(c, namespace: meta[1], name: meta[0], present: true), "\(name): not applied on every node")
            }
            try await checkMatrix(c, name, expected, podIPs: podIPs, serviceIPs: serviceIPs, round: round)
            if name.hasPrefix("default-deny ingress") {
                // Each drop is in the nodes' drop log, with the policy that made it.
                let drops = try await c.kemu(["logs", "--drops"]).output
                #expect(drops.contains(" DROP y/a (") && drops.contains("ingress of x/b denied by x/deny-ingress"), "\(drops.suffix(600))")
            }
            if name.hasPrefix("default-deny egress") {
                // DNS still answers pods whose egress is denied but for port 53.
                let lookup = try await c.kubectl(["exec", "-n", "x", "a", "-c", "c80", "--", "python3", "-c",
                                                  "import socket; print(socket.gethostbyname('s-b.y.svc.cluster.local'))"]).output
                #expect(lookup.trimmingCharacters(in: .whitespacesAndNewlines) == serviceIPs[Peer(namespace: "y", pod: "b")], "\(lookup)")
            }
            if let (ns, policy) = policyName {
                #expect(try await c.kubectl(["delete", "networkpolicy", "-n", ns, policy]).status == .exited(0))
                #expect(try await policyApplied(c, namespace: ns, name: policy, present: false))
            }
        }
    }

    /// Probes the whole matrix (pod IPs and Service IPs) from every pod at once, and traces it.
    func checkMatrix(_ c: TestCluster, _ name: String, _ expected: (Peer, Peer, UInt16, String) -> Bool,
                     podIPs: [Peer: String], serviceIPs: [Peer: String], round: Int) async throws {
        let results = try await withThrowingTaskGroup(of: (Peer, [String: Bool], [Bool]).self) { group in
            for source in Self.peers {
                group.addTask {
                    var targets: [[String]] = [], traced: [String] = []
                    for d in Self.peers {
                        for (port, proto) in Self.ports {
                            for (via, ip) in [("pod", podIPs[d] ?? ""), ("svc", serviceIPs[d] ?? "")] {
                                targets.append(["\(d) \(port)/\(proto) \(via)", ip, String(port), proto])
                            }
                            traced.append("\(d):\(port)/\(proto)")
                        }
                    }
                    let json = String(decoding: try JSONSerialization.data(withJSONObject: targets), as: UTF8.self)
                    let out = try await c.kubectl(["exec", "-n", source.namespace, source.pod, "-c", "c80", "--", "python3", "-c", Self.probe, json,
                                                   String(20000 + round * 100)]).output
                    let reached = (try? JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Bool]) ?? [:]
                    if reached.isEmpty { Issue.record("\(name): the probe in \(source) printed no verdicts: \(out.prefix(600))") }
                    let trace = try await c.kemu(["policy", "trace", source.description] + traced).output
                    let verdicts = trace.split(separator: "\n").filter { $0.hasPrefix("ALLOWED") || $0.hasPrefix("DENIED") }.map { $0.hasPrefix("ALLOWED") }
                    return (source, reached, verdicts)
                }
            }
            var all: [(Peer, [String: Bool], [Bool])] = []
            for try await r in group { all.append(r) }
            return all
        }
        var wrong: [String] = []
        for (source, reached, verdicts) in results {
            #expect(verdicts.count == Self.peers.count * Self.ports.count, "\(name): trace from \(source) gave \(verdicts.count) verdicts")
            var cell = 0
            for d in Self.peers {
                for (port, proto) in Self.ports {
                    let want = expected(source, d, port, proto)
                    for via in ["pod", "svc"] where reached["\(d) \(port)/\(proto) \(via)"] != want {
                        wrong.append("\(source) → \(d) \(port)/\(proto) via \(via): \(reached["\(d) \(port)/\(proto) \(via)"].map(String.init) ?? "no answer"), want \(want)")
                    }
                    if cell < verdicts.count, verdicts[cell] != want { wrong.append("\(source) → \(d) \(port)/\(proto): trace says \(verdicts[cell]), want \(want)") }
                    cell += 1
                }
            }
        }
        #expect(wrong.isEmpty, "\(name): \(wrong.count) cells wrong: \(wrong.prefix(12).joined(separator: "; "))")
    }

    /// Waits until every node's proxy has (or no longer has) the policy's rules.
    func policyApplied(_ c: TestCluster, namespace: String, name: String, present: Bool) async throws -> Bool {
        try await eventually(10) {
            for node in ["node-1", "node-2"] {
                let metrics = try await c.metrics(node)
                if metrics.contains("kemu_policy_packets_total{namespace=\"\(namespace)\",policy=\"\(name)\"") != present { return false }
            }
            return true
        }
    }
}
