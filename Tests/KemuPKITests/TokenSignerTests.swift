import Foundation
@testable import KemuPKI
import KemuSystem
import Testing

/// ServiceAccount token signatures: what one key signs it verifies, byte for byte, and nothing else.
@Suite struct TokenSignerTests {
    @Test func aSignedTokenVerifiesAndAnyChangeDoesNot() throws {
        let signer = TokenSigner(key: .init())
        let claims = Array(#"{"sub":"system:serviceaccount:default:bot"}"#.utf8)
        let token = try signer.sign(claims: claims)
        #expect(token.split(separator: ".").count == 3)
        #expect(signer.verify(token) == claims)
        // The header says ES256 and names the key.
        let header = try #require(Base64URL.decode(token.split(separator: ".")[0]))
        #expect(String(decoding: header, as: UTF8.self).contains(#""alg":"ES256""#))

        let parts = token.split(separator: ".").map(String.init)
        let otherClaims = Base64URL.encode(Array(#"{"sub":"system:serviceaccount:kube-system:admin"}"#.utf8))
        #expect(signer.verify([parts[0], otherClaims, parts[2]].joined(separator: ".")) == nil, "claims swapped under the old signature")
        let none = Base64URL.encode(Array(#"{"alg":"none"}"#.utf8))
        #expect(signer.verify([none, parts[1], parts[2]].joined(separator: ".")) == nil, "alg none")
        #expect(signer.verify([none, parts[1], ""].joined(separator: ".")) == nil)
        #expect(TokenSigner(key: .init()).verify(token) == nil, "another key")
        for junk in ["", ".", "..", "a.b.c", "a.b", parts[0] + "." + parts[1] + ".!!", String(repeating: "a", count: 20_000)] {
            #expect(signer.verify(junk) == nil, "\(junk.prefix(20))")
        }
    }

    @Test func theKeyIsKeptPrivateAndReused() throws {
        let dir = NSTemporaryDirectory() + "kemu-sa-\(UUID().uuidString)"
        try FileSystem.makeDirectories(dir)
        defer { try? FileSystem.removeTree(dir) }
        let first = try TokenSigner.loadOrCreate("\(dir)/sa.key")
        let token = try first.sign(claims: Array("{}".utf8))
        #expect(try TokenSigner.loadOrCreate("\(dir)/sa.key").verify(token) != nil, "a restarted server takes its tokens back")
        var info = stat()
        #expect(stat("\(dir)/sa.key", &info) == 0 && info.st_mode & 0o777 == 0o600)
        try FileSystem.writeFile("\(dir)/sa.key", "not a key")
        #expect(throws: KemuError.self) { try TokenSigner.loadOrCreate("\(dir)/sa.key") }
    }

    @Test func base64URLRoundTripsAndRefusesOtherAlphabets() {
        for bytes in [[], [0xfb], [0xfb, 0xff], [0xfb, 0xff, 0xfe], Array(0...255)] as [[UInt8]] {
            let text = Base64URL.encode(bytes)
            #expect(!text.contains("=") && !text.contains("+") && !text.contains("/"))
            #expect(Base64URL.decode(Substring(text)) == bytes)
        }
        #expect(Base64URL.decode("a+b/") == nil)
        #expect(Base64URL.decode("ab==") == nil)
    }
}
