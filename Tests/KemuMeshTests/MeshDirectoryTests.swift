import KemuAPI
import KemuIP
@testable import KemuMesh
import Testing

/// What a node's proxy decides from what it follows: identities wanted, STRICT pods, the
/// authorization of a connection, and how the mesh's names come out in metrics and nftables.
@Suite struct MeshDirectoryTests {
    func directory() -> MeshDirectory {
        let d = MeshDirectory(node: "node-2", trustDomain: "cluster.local", clusterWide: false)
        d.setNamespace("shop", meshed: true)
        d.setNamespace("plain", meshed: false)
        d.setPod(.init(namespace: "shop", name: "web-7c7b845bbc-abcde", serviceAccount: "web", address: IPv4Address(10, 244, 2, 2), labels: ["app": "web"]))
        d.setPod(.init(namespace: "plain", name: "db-0", serviceAccount: "default", address: IPv4Address(10, 244, 2, 3)))
        return d
    }

    @Test func theNodeWantsItsOwnIdentityAndItsMeshedPodsOnly() {
        let d = directory()
        #expect(d.wantedIdentities == [.node(domain: "cluster.local", name: "node-2"),
                                       .workload(domain: "cluster.local", namespace: "shop", serviceAccount: "web")])
        #expect(d.anyMeshed)
        #expect(!MeshDirectory(node: "n", trustDomain: "cluster.local", clusterWide: false).anyMeshed)
    }

    @Test func policiesDecideByPeerAndStrictKeepsPlaintextOut() throws {
        let d = directory()
        let web = try #require(d.localPod(IPv4Address(10, 244, 2, 2)))
        #expect(d.authorize(peer: nil, source: nil, destination: web, port: 8080).allowed)
        var deny: JSON = ["kind": "AuthorizationPolicy", "spec": ["action": "DENY", "rules": [["from": [["source": ["namespaces": ["bad"]]]]]]]]
        deny.namespace = "shop"
        deny.name = "deny-bad"
        d.policyEvent(.added(deny))
        let bad = SPIFFEID.workload(domain: "cluster.local", namespace: "bad", serviceAccount: "x")
        let decision = d.authorize(peer: bad, source: IPv4Address(10, 244, 1, 9), destination: web, port: 8080)
        #expect(!decision.allowed && decision.policy?.name == "deny-bad")
        #expect(d.authorize(peer: .workload(domain: "cluster.local", namespace: "good", serviceAccount: "x"), source: nil, destination: web, port: 8080).allowed)

        #expect(d.strictAddresses.isEmpty)
        var strict: JSON = ["kind": "PeerAuthentication", "spec": ["mtls": ["mode": "STRICT"]]]
        strict.namespace = "shop"
        strict.name = "default"
        d.policyEvent(.added(strict))
        #expect(d.strictAddresses == [IPv4Address(10, 244, 2, 2)])  // the plain namespace's pod is not meshed
        #expect(MeshEnforcer.script(.init(strict: d.strictAddresses), mark: 7).contains("elements = { 10.244.2.2 }"))
        #expect(!MeshEnforcer.script(.init(), mark: 7).contains("chain"))
        // The capture: inbound to the node's meshed pods, but never what answers a pod's own
        // connections, what a proxy dialled, or plaintext for a STRICT pod (the forward rule's).
        let capture = MeshEnforcer.script(.init(strict: d.strictAddresses, captureSources: [IPv4Address(10, 244, 2, 2)]), mark: 7)
        let lines = capture.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        let reply = lines.firstIndex(of: "ct direction reply return")
        let strictFirst = lines.firstIndex(of: "ip daddr @strict ip saddr != @capture_sources return")
        let inbound = lines.firstIndex { $0.hasPrefix("meta l4proto tcp ip daddr @capture_sources tcp sport != 16384-29999") && $0.hasSuffix("tproxy to :15001 accept") }
        #expect(reply != nil && strictFirst != nil && inbound != nil && reply! < strictFirst! && strictFirst! < inbound!, "\(capture)")
        #expect(!capture.contains("capture_destinations"), "no other node's meshed pods known: no outbound rule")
        // A pod of the node is captured by its address whatever port it dials from (a proxy's
        // own, even), and so is one dialling another node's meshed pod from a proxy's port.
        let posing = MeshEnforcer.script(.init(captureSources: [IPv4Address(10, 244, 2, 2)], captureDestinations: [IPv4Address(10, 244, 1, 5)],
                                               localPods: [IPv4Address(10, 244, 2, 2), IPv4Address(10, 244, 2, 3)]), mark: 7)
        let rules = posing.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        let near = rules.firstIndex { $0.hasPrefix("meta l4proto tcp ip daddr @capture_sources ip saddr @local_pods meta mark set 7 tproxy") }
        let far = rules.firstIndex { $0.hasPrefix("meta l4proto tcp ip daddr @capture_sources tcp sport != 16384-29999") }
        #expect(near != nil && far != nil && near! < far!, "\(posing)")
        #expect(rules.contains("meta l4proto tcp ip saddr @local_pods ip daddr @capture_destinations tcp sport 16384-29999 meta mark set 7 tproxy to :15001 accept"),
                "\(posing)")
        d.policyEvent(.deleted(strict))
        #expect(d.strictAddresses.isEmpty)
    }

    @Test func workloadNamesAsIstioDerivesThem() {
        #expect(MeshTraffic.workload(pod: "web-7c7b845bbc-abcde", labels: [:]) == "web")
        #expect(MeshTraffic.workload(pod: "caller", labels: [:]) == "caller")
        #expect(MeshTraffic.workload(pod: "x-1", labels: ["app": "shop"]) == "shop")
        let key = MeshTraffic.Key(reporter: "destination", sourceWorkload: "a\"b", sourceNamespace: "n", sourcePrincipal: "p",
                                  destinationWorkload: "w", destinationNamespace: "n", destinationPrincipal: "q")
        #expect(MeshTraffic.labels(key).contains("source_workload=\"a\\\"b\""))
    }
}
