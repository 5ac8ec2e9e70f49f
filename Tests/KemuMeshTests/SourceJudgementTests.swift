import KemuAPI
import KemuClient
import KemuIP
@testable import KemuMesh
import KemuProxy
import KemuSystem
import Testing

/// What a node's proxy decides itself, before any tunnel: a plain pod's connection to another
/// node's meshed pod (plaintext, which no destination proxy sees) is judged as the destination
/// would judge plaintext — STRICT by the pod's labels, AuthorizationPolicy with no principal.
@Suite struct SourceJudgementTests {
    static let loop = try? MeshLoop(name: "test-mesh")

    func client(_ directory: MeshDirectory) throws -> TunnelClient {
        let api = APIClient(server: "http://127.0.0.1:1")
        let identities = MeshIdentities(client: api, node: "node-1", trust: directory.trust)
        return TunnelClient(directory: directory, identities: identities, loop: try #require(Self.loop),
                            counters: TunnelCounters(),
                            denials: MeshDenials(client: api, node: "node-1"), traffic: MeshTraffic(), book: TunnelBook(trust: directory.trust))
    }

    func policy(_ kind: String, _ name: String, _ spec: JSON) -> JSON {
        var p: JSON = ["kind": .string(kind), "spec": spec]
        (p.namespace, p.name) = ("shop", name)
        return p
    }

    @Test func aPlainClientIsJudgedHereAsTheDestinationWouldJudgePlaintext() throws {
        let d = MeshDirectory(node: "node-1", trustDomain: "cluster.local", clusterWide: false)
        d.setNamespace("shop", meshed: true)
        d.setNamespace("plain", meshed: false)
        d.setPod(.init(namespace: "plain", name: "curl", serviceAccount: "default", address: IPv4Address(10, 244, 1, 5)))
        d.setPod(.init(namespace: "shop", name: "front", serviceAccount: "front", address: IPv4Address(10, 244, 1, 6)))
        d.setRemotePod(.init(namespace: "shop", name: "db-0", serviceAccount: "db", address: IPv4Address(10, 244, 2, 7), labels: ["app": "db"]))
        d.setRemotePod(.init(namespace: "shop", name: "web-0", serviceAccount: "web", address: IPv4Address(10, 244, 2, 8), labels: ["app": "web"]))
        let tunnels = try client(d)
        let plain = SocketAddress(IPv4Address(10, 244, 1, 5), 40000), meshed = SocketAddress(IPv4Address(10, 244, 1, 6), 40000)
        let db = EndpointSpec(SocketAddress(IPv4Address(10, 244, 2, 7), 5432), target: "shop/db-0", nodeName: "node-2")
        let web = EndpointSpec(SocketAddress(IPv4Address(10, 244, 2, 8), 8080), target: "shop/web-0", nodeName: "node-2")
        func verdict(_ from: SocketAddress, _ to: EndpointSpec) -> String {
            switch tunnels.judge(client: from, endpoint: to, record: false) {
            case .direct: "direct"
            case .refused: "refused"
            case .tunnel: "tunnel"
            }
        }
        #expect(verdict(plain, db) == "direct" && verdict(meshed, db) == "tunnel")
        // STRICT for app=db only: another node's db is refused to the plain pod here (it was
        // dialled, reset by that node, and counted against the endpoint); web is not STRICT.
        d.policyEvent(.added(policy("PeerAuthentication", "db-strict", ["selector": ["matchLabels": ["app": "db"]], "mtls": ["mode": "STRICT"]])))
        #expect(verdict(plain, db) == "refused" && verdict(plain, web) == "direct" && verdict(meshed, db) == "tunnel")
        // ALLOW only a principal: plaintext has none, so the plain pod is refused web.
        let generation = tunnels.policyGeneration
        d.policyEvent(.added(policy("AuthorizationPolicy", "web-front", ["selector": ["matchLabels": ["app": "web"]], "action": "ALLOW",
                                                                         "rules": [["from": [["source": ["principals": ["cluster.local/ns/shop/sa/front"]]]]]]])))
        #expect(tunnels.policyGeneration != generation)
        #expect(verdict(plain, web) == "refused" && verdict(meshed, web) == "tunnel")
        #expect(!tunnels.allows(client: plain, endpoint: web))
        // Not known (yet): that node's nftables judge STRICT, unless the namespace is STRICT as a whole.
        let unknown = EndpointSpec(SocketAddress(IPv4Address(10, 244, 2, 9), 80), target: "shop/new-0", nodeName: "node-2")
        #expect(verdict(plain, unknown) == "direct")
        d.policyEvent(.added(policy("PeerAuthentication", "all", ["mtls": ["mode": "STRICT"]])))
        d.policyEvent(.deleted(policy("PeerAuthentication", "db-strict", [:])))
        #expect(verdict(plain, unknown) == "refused")
    }
}
