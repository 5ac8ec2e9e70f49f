import Foundation
import KemuAPI
import KemuControllers
import KemuPKI
import KemuStore
import Testing

/// The mesh CA's signer: a node gets its own proxy identity and those of the ServiceAccounts of
/// pods bound to it, and is told why for anything else.
@Suite struct MeshCertificateSignerTests {
    static let resource = "certificatesigningrequests.certificates.k8s.io"

    func request(_ store: Store, _ name: String, for id: SPIFFEID, by user: String, groups: [String] = ["system:nodes"]) throws {
        let (pem, _) = try SVID.request(for: id)
        var o: JSON = ["apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
                       "spec": ["request": .string(Data(pem.utf8).base64EncodedString()), "signerName": .string(Mesh.signerName),
                                "username": .string(user), "groups": .array(groups.map { .string($0) })]]
        o.name = name
        try store.create(Self.resource, o)
    }

    func pod(_ store: Store, _ name: String, namespace: String, account: String, node: String) throws {
        var o: JSON = ["kind": "Pod", "spec": ["nodeName": .string(node), "serviceAccountName": .string(account)], "status": ["phase": "Running"]]
        o.name = name
        o.namespace = namespace
        try store.create("pods", o)
    }

    func outcome(_ store: Store, _ name: String) async -> (type: String, certificate: Bool, message: String)? {
        let deadline = Date().addingTimeInterval(60)  // every suite shares the cooperative pool, and a loaded start held it 20 s once
        while Date() < deadline {
            if let o = store.get(Self.resource, name: name), let c = o[path: "status.conditions"]?.array?.first {
                return (c["type"]?.string ?? "", o[path: "status.certificate"] != nil, c["message"]?.string ?? "")
            }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return nil
    }

    @Test func aNodeGetsItsPodsIdentitiesAndNothingElse() async throws {
        let store = Store()
        let ca = try MeshCA(generatingFor: "t")
        let signer = MeshCertificateSigner(store: store, trustDomain: "cluster.local") { pem, seconds, authorize in
            try ca.sign(requestPEM: pem, seconds: seconds, authorize: authorize)
        }
        let running = Task { try await signer.run() }
        defer { running.cancel() }
        try pod(store, "web-1", namespace: "shop", account: "web", node: "node-1")
        let web = SPIFFEID.workload(domain: "cluster.local", namespace: "shop", serviceAccount: "web")
        try request(store, "mine", for: web, by: "system:node:node-1")
        try request(store, "theirs", for: web, by: "system:node:node-2")
        try request(store, "own-node", for: .node(domain: "cluster.local", name: "node-2"), by: "system:node:node-2")
        try request(store, "other-node", for: .node(domain: "cluster.local", name: "node-1"), by: "system:node:node-2")
        try request(store, "user", for: web, by: "alice", groups: ["system:authenticated"])
        try request(store, "domain", for: .workload(domain: "evil.example", namespace: "shop", serviceAccount: "web"), by: "system:node:node-1")

        let mine = await outcome(store, "mine")
        #expect(mine?.type == "Approved" && mine?.certificate == true)
        #expect(await outcome(store, "own-node")?.type == "Approved")
        let theirs = await outcome(store, "theirs")
        #expect(theirs?.type == "Denied" && theirs?.certificate == false)
        #expect(theirs?.message.contains("no pod with ServiceAccount shop/web is bound to node node-2") == true)
        #expect(await outcome(store, "other-node")?.type == "Denied")
        #expect(await outcome(store, "user")?.message.contains("only node proxies") == true)
        #expect(await outcome(store, "domain")?.message.contains("trust domain") == true)
    }

    @Test func aStoppedCAAnswersOnceItRunsAgain() async throws {
        let store = Store()
        let ca = try MeshCA(generatingFor: "t")
        let signer = MeshCertificateSigner(store: store, trustDomain: "cluster.local") { pem, seconds, authorize in
            try ca.sign(requestPEM: pem, seconds: seconds, authorize: authorize)
        }
        signer.setPaused(true)
        let running = Task { try await signer.run() }
        defer { running.cancel() }
        try request(store, "waits", for: .node(domain: "cluster.local", name: "node-1"), by: "system:node:node-1")
        try await Task.sleep(for: .milliseconds(200))
        #expect(store.get(Self.resource, name: "waits")?[path: "status.conditions"] == nil)
        signer.setPaused(false)
        #expect(await outcome(store, "waits")?.type == "Approved")
    }

    @Test func aStoppedCAAnswersNothingUntilItRunsAgain() async throws {
        let store = Store()
        let ca = try MeshCA(generatingFor: "t")
        let stopFile = NSTemporaryDirectory() + "kemu-mesh-ca-\(UUID().uuidString).stopped"
        #expect(FileManager.default.createFile(atPath: stopFile, contents: Data()))
        defer { try? FileManager.default.removeItem(atPath: stopFile) }
        let signer = MeshCertificateSigner(store: store, trustDomain: "cluster.local", stopFile: stopFile) { pem, seconds, authorize in
            try ca.sign(requestPEM: pem, seconds: seconds, authorize: authorize)
        }
        let running = Task { try await signer.run() }
        defer { running.cancel() }
        try await Task.sleep(for: .milliseconds(400))  // the flag seen
        try request(store, "waits", for: .node(domain: "cluster.local", name: "node-1"), by: "system:node:node-1")
        try await Task.sleep(for: .milliseconds(600))
        #expect(store.get(Self.resource, name: "waits")?[path: "status.conditions"] == nil, "answered while stopped")
        try FileManager.default.removeItem(atPath: stopFile)
        #expect(await outcome(store, "waits")?.type == "Approved")
    }
}
