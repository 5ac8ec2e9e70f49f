import Crypto
import Foundation
import KemuSystem

/// The key that signs ServiceAccount tokens (upstream's `--service-account-signing-key-file`):
/// compact JSON Web Signatures with ES256 (ECDSA P-256, SHA-256), which Kubernetes accepts as
/// it does RS256. The claims are the caller's JSON; this type only signs and verifies bytes.
public struct TokenSigner: Sendable {
    let key: P256.Signing.PrivateKey
    /// The key's id in each token's header (`kid`): the SHA-256 of its public key, as upstream.
    public let keyID: String

    public init(key: P256.Signing.PrivateKey) {
        self.key = key
        keyID = Base64URL.encode(Array(SHA256.hash(data: key.publicKey.derRepresentation)))
    }

    /// DIR/sa.key, made on first use (0600) and reused after, so tokens outlive a restart.
    public static func loadOrCreate(_ path: String) throws -> TokenSigner {
        if FileSystem.exists(path) {
            do {
                return TokenSigner(key: try P256.Signing.PrivateKey(pemRepresentation: try FileSystem.readFile(path)))
            } catch {
                throw KemuError(.invalidArgument, "\(path) is not a P-256 private key in PEM", cause: error)
            }
        }
        let key = P256.Signing.PrivateKey()
        try FileSystem.writeFile(path, key.pemRepresentation, mode: 0o600)
        return TokenSigner(key: key)
    }

    /// `header.payload.signature`, each part base64url without padding.
    public func sign(claims: [UInt8]) throws -> String {
        let header = #"{"alg":"ES256","kid":"\#(keyID)"}"#
        let signed = Base64URL.encode(Array(header.utf8)) + "." + Base64URL.encode(claims)
        let signature = try key.signature(for: Array(signed.utf8))
        return signed + "." + Base64URL.encode(Array(signature.rawRepresentation))
    }

    /// The claims of a token this key signed, or nil for anything else (another key, another
    /// algorithm, a changed byte, not a JWS at all). Expiry and audience are the caller's to check.
    public func verify(_ token: String) -> [UInt8]? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard token.utf8.count <= 16 << 10, parts.count == 3,
              let headerBytes = Base64URL.decode(parts[0]), let claims = Base64URL.decode(parts[1]),
              let signatureBytes = Base64URL.decode(parts[2]),
              let header = try? JSONSerialization.jsonObject(with: Data(headerBytes)) as? [String: Any],
              header["alg"] as? String == "ES256",
              let signature = try? P256.Signing.ECDSASignature(rawRepresentation: signatureBytes) else { return nil }
        let signed = Array(token.utf8.prefix(parts[0].utf8.count + 1 + parts[1].utf8.count))
        return key.publicKey.isValidSignature(signature, for: signed) ? claims : nil
    }
}

/// RFC 4648 §5 base64url without padding, as JWS uses it.
public enum Base64URL {
    public static func encode(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    public static func decode(_ text: Substring) -> [UInt8]? {
        guard text.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else { return nil }
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        return Data(base64Encoded: base64).map(Array.init)
    }
}
