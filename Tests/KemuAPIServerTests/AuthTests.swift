import AsyncHTTPClient
import Foundation
import KemuAPI
import KemuClient
import KemuPKI
import NIOSSL
import KemuTestSupport
import Testing

/// The API server's https side against a real `kemu server`: who gets in, who does not, and what
/// survives a restart.
@Suite struct AuthTests {
    let namespaces = APIResources.all.first { $0.resource == "namespaces" }!

    /// Trusts the server's CA and presents nothing: an anonymous caller.
    func anonymous(_ server: ServerProcess, token: String? = nil) throws -> APIClient {
        var config = try Kubeconfig.load(path: server.kubeconfig)
        config.clientCertificatePEM = nil
        config.clientKeyPEM = nil
        config.token = token
        return try APIClient(kubeconfig: config)
    }

    @Test func anonymousCallersGet401ExceptOnHealth() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let client = try anonymous(server)
        #expect(client.server.hasPrefix("https://127.0.0.1:"))
        let refused = await #expect(throws: ClientError.self) { try await client.list(namespaces) }
        #expect(refused?.code == 401 && refused?.reason == "Unauthorized")
        let unknown = try await send(client, "GET", "/no/such/path")
        #expect(unknown.code == 401)
        for path in ["/healthz", "/livez", "/readyz"] {
            let health = try await send(client, "GET", path)
            #expect(health.code == 200 && health.body == "ok", "\(path)")
        }
    }

    @Test func bearerTokensFromTheTokenFileAuthenticate() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let line = try String(contentsOfFile: server.dataDir + "/pki/tokens.csv", encoding: .utf8)
        let token = String(line.prefix { $0 != "," })
        #expect(token.count == 48)
        let names = try await anonymous(server, token: token).list(namespaces).items.map(\.name)
        #expect(names.contains("kube-system"))
        let wrong = await #expect(throws: ClientError.self) { try await anonymous(server, token: token + "0").list(namespaces) }
        #expect(wrong?.code == 401)
    }

    @Test func certificatesFromAnotherAuthorityAreRefused() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let config = try Kubeconfig.load(path: server.kubeconfig)
        let stranger = try ClusterCA.generate(name: "stranger-ca")
        // A client certificate with the admin's very name, signed by the wrong CA: the handshake fails.
        let forged = try stranger.issueClient(user: "kemu-admin", groups: ["system:masters"])
        // No retries of the failed handshakes (AsyncHTTPClient would retry until its deadline).
        var settings = HTTPClient.Configuration()
        settings.connectionPool.retryConnectionEstablishment = false
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: settings)
        var impostor = config
        impostor.clientCertificatePEM = forged.certificatePEM
        impostor.clientKeyPEM = forged.privateKeyPEM
        await expectHandshakeRefused(impostor, http, "a client certificate from another CA")
        // A client that trusts only another CA does not accept the server's certificate.
        var misled = config
        misled.certificateAuthorityPEM = stranger.certificatePEM
        await expectHandshakeRefused(misled, http, "the server's certificate checked against another CA")
        try await http.shutdown()
        // The admin certificate the kubeconfig carries is in.
        #expect(try await APIClient(kubeconfig: config).list(namespaces).items.count >= 4)
    }

    /// The request fails in the TLS handshake: no answer from the server, a TLS error instead.
    func expectHandshakeRefused(_ config: Kubeconfig, _ http: HTTPClient, _ what: String) async {
        do {
            _ = try await APIClient(kubeconfig: config, http: http).list(namespaces)
            Issue.record("\(what) was accepted")
        } catch let error as ClientError {
            Issue.record("\(what): the server answered (\(error)) instead of refusing the handshake")
        } catch {
            #expect(error is NIOSSLError || error is BoringSSLError, "\(what): \(type(of: error)) \(error)")
        }
    }

    @Test func theCertificateAuthorityAndAdminSurviveARestart() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let before = try Kubeconfig.load(path: server.kubeconfig)
        let port = server.port
        server.terminate()
        try server.start(port: port)
        let after = try Kubeconfig.load(path: server.kubeconfig)
        #expect(after.certificateAuthorityPEM == before.certificateAuthorityPEM)
        #expect(after.clientCertificatePEM == before.clientCertificatePEM)
        // A client built before the restart still trusts the (reissued) serving certificate.
        #expect(try await APIClient(kubeconfig: before).list(namespaces).items.count >= 4)
    }

    @Test func insecureServesPlainHTTPWithoutCredentials() async throws {
        let server = try ServerProcess(insecure: true)
        defer { server.stop() }
        let config = try Kubeconfig.load(path: server.kubeconfig)
        #expect(config.server.hasPrefix("http://127.0.0.1:"))
        #expect(config.certificateAuthorityPEM == nil && config.clientCertificatePEM == nil)
        #expect(try await APIClient(kubeconfig: config).list(namespaces).items.count >= 4)
        #expect(!FileManager.default.fileExists(atPath: server.dataDir + "/pki"))
    }

    @Test func aBrokenTokenFileStopsTheServerWithItsLine() throws {
        let dataDir = NSTemporaryDirectory() + "kemu-auth-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        try FileManager.default.createDirectory(atPath: dataDir + "/pki", withIntermediateDirectories: true)
        try "abc,kemu-admin,kemu-admin,\"system:masters\"\nonly-a-token\n".write(toFile: dataDir + "/pki/tokens.csv", atomically: true, encoding: .utf8)
        let result = try ServerProcess.run("\(ServerProcess.root)/.build/debug/kemu", ["server", "--port", "0", "--data-dir", dataDir])
        #expect(result.code != 0)
        #expect(result.out.contains("tokens.csv line 2"), "\(result.out)")
        #expect(!FileManager.default.fileExists(atPath: dataDir + "/kubeconfig"))
    }

    @Test func clientCertificatesCarryUserAndGroups() throws {
        let ca = try ClusterCA.generate(name: "test-ca")
        let pair = try ca.issueClient(user: "system:node:n1", groups: ["system:nodes"])
        let der = try NIOSSLCertificate(bytes: Array(pair.certificatePEM.utf8), format: .pem).toDERBytes()
        #expect(try Identity(certificateDER: der) == Identity(user: "system:node:n1", groups: ["system:nodes"]))
    }

    @Test func kubeconfigRoundTripsAndNamesWhatIsMissing() throws {
        let config = Kubeconfig(server: "https://127.0.0.1:6443", cluster: "c1", certificateAuthorityPEM: "CA\n",
                                clientCertificatePEM: "CERT\n", clientKeyPEM: "KEY\n", token: "t0k", namespace: "web")
        #expect(try Kubeconfig.parse(config.render()) == config)
        let missing = #expect(throws: ClientError.self) {
            try Kubeconfig.parse("apiVersion: v1\nkind: Config\ncurrent-context: x\ncontexts: []\n", path: "/k")
        }
        #expect(missing?.description == #"kubeconfig /k contexts: no entry named "x""#)
        let noServer = #expect(throws: ClientError.self) {
            try Kubeconfig.parse("current-context: a\ncontexts: [{name: a, context: {cluster: c}}]\nclusters: [{name: c, cluster: {}}]\n")
        }
        #expect(noServer?.description.contains("clusters[c].cluster.server is missing") == true)
    }
}
