import Crypto
import Foundation
import KemuAPI
@testable import KemuPKI
import Testing
import X509

/// The mesh CA signs a request for the one SPIFFE ID it names, only once the caller's check
/// passes, and nothing that is not a well-formed, self-signed request.
@Suite struct MeshCATests {
    let web = SPIFFEID.workload(domain: "cluster.local", namespace: "shop", serviceAccount: "web")

    @Test func aRequestBecomesAShortLivedSVIDForItsIdentity() throws {
        let ca = try MeshCA(generatingFor: "t")
        let (request, _) = try SVID.request(for: web)
        var asked: SPIFFEID?
        let now = Date()
        let pem = try ca.sign(requestPEM: request, seconds: 3600, now: now) { asked = $0 }
        #expect(asked == web)
        let read = try #require(SVID.identity(certificatePEM: pem))
        #expect(read.id == web)
        #expect(abs(read.notAfter.timeIntervalSince(now) - 3600) < 2)
        let certificate = try Certificate(pemEncoded: pem)
        #expect(try Certificate(pemEncoded: ca.certificatePEM).publicKey.isValidSignature(certificate.signature, for: certificate))
        #expect(try certificate.extensions.basicConstraints == .notCertificateAuthority)
    }

    @Test func theCallersRefusalStopsTheSigning() throws {
        struct No: Error {}
        let ca = try MeshCA(generatingFor: "t")
        let (request, _) = try SVID.request(for: web)
        #expect(throws: No.self) { try ca.sign(requestPEM: request, seconds: 3600) { _ in throw No() } }
    }

    @Test func malformedRequestsAreRefusedWithAReason() throws {
        let ca = try MeshCA(generatingFor: "t")
        #expect(throws: MeshCAError.self) { try ca.sign(requestPEM: "not pem", seconds: 600) { _ in } }
        // A request naming no SPIFFE ID (a plain subject only).
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let plain = try CertificateSigningRequest(version: .v1, subject: try DistinguishedName { CommonName("web") }, privateKey: key,
                                                  attributes: .init(), signatureAlgorithm: .ecdsaWithSHA256)
        #expect(throws: MeshCAError.self) { try ca.sign(requestPEM: try plain.serializeAsPEM().pemString, seconds: 600) { _ in } }
    }

    @Test func spiffeIDsParseStrictly() {
        #expect(SPIFFEID("spiffe://cluster.local/ns/shop/sa/web") == web)
        #expect(web.workload?.namespace == "shop" && web.workload?.serviceAccount == "web")
        #expect(SPIFFEID("spiffe://cluster.local/kemu/node/node-1")?.nodeName == "node-1")
        #expect(web.principal == "cluster.local/ns/shop/sa/web")
        for bad in ["http://x/ns/a", "spiffe://", "spiffe://Cluster/ns", "spiffe://d/ns//sa", "spiffe://d/ns/../sa/x", "spiffe://d/a b"] {
            #expect(SPIFFEID(bad) == nil, "\(bad)")
        }
    }
}
