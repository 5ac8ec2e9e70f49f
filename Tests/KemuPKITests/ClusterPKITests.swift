import Foundation
@testable import KemuPKI
import KemuSystem
import Testing
import SwiftASN1
import X509

/// The cluster CA and the files it keeps: who a certificate says it is, and that a restart keeps
/// the same CA with its keys private.
@Suite struct ClusterPKITests {
    func directory() -> String { NSTemporaryDirectory() + "kemu-pki-\(UUID().uuidString)" }

    @Test func aClientCertificateSaysWhoAndIsSignedByTheCA() throws {
        let ca = try ClusterCA.generate(name: "test-ca")
        let pair = try ca.issueClient(user: "system:node:node-1", groups: ["system:nodes"])
        let certificate = try Certificate(pemEncoded: pair.certificatePEM)
        #expect(try Identity(certificateDER: PEMDocument(pemString: pair.certificatePEM).derBytes) == Identity(user: "system:node:node-1", groups: ["system:nodes"]))
        #expect(certificate.issuer == ca.certificate.subject)
        #expect(ca.certificate.publicKey.isValidSignature(certificate.signature, for: certificate))
        // Another CA's certificate does not pass for this one's.
        let other = try ClusterCA.generate(name: "other-ca").issueClient(user: "mallory", groups: [])
        #expect(!ca.certificate.publicKey.isValidSignature(try Certificate(pemEncoded: other.certificatePEM).signature,
                                                           for: try Certificate(pemEncoded: other.certificatePEM)))
    }

    @Test func theSameCAComesBackAndItsKeysArePrivate() throws {
        let dir = directory()
        defer { try? FileSystem.removeTree(dir) }
        let first = try ClusterPKI.loadOrCreate(directory: dir, clusterName: "t")
        let again = try ClusterPKI.loadOrCreate(directory: dir, clusterName: "t")
        #expect(first.ca.certificatePEM == again.ca.certificatePEM)
        #expect(first.admin == again.admin && first.adminToken == again.adminToken)
        #expect(again.tokens[again.adminToken] == ClusterPKI.adminIdentity)
        for key in ["ca.key", "admin.key", "tokens.csv"] {
            var info = stat()
            #expect(stat("\(dir)/\(key)", &info) == 0)
            #expect(info.st_mode & 0o077 == 0, "\(key) is readable by others: \(String(info.st_mode & 0o777, radix: 8))")
        }
        var info = stat()
        #expect(stat(dir, &info) == 0 && info.st_mode & 0o077 == 0)
    }

    @Test func aBrokenTokenFileIsRefusedNamingTheLine() {
        #expect(throws: KemuError.self) { try ClusterPKI.parseTokens("# comment\nabc,user\n", file: "tokens.csv") }
        #expect(throws: Never.self) { try ClusterPKI.parseTokens("t,u,u,\"g1,g2\"\n\n", file: "tokens.csv") }
        let lines = (try? ClusterPKI.parseTokens("t,u,u,\"g1,g2\"\n", file: "tokens.csv")) ?? []
        #expect(lines.first?.identity == Identity(user: "u", groups: ["g1", "g2"]))
        do {
            _ = try ClusterPKI.parseTokens("ok,u,u\n,nobody,x\n", file: "tokens.csv")
        } catch {
            #expect("\(error)".contains("tokens.csv line 2"))
        }
    }
}
