import Crypto
import Foundation
import KemuAPI
import KemuSystem
import SwiftASN1
import X509

/// The mesh's certificate authority, kept by the control plane apart from the cluster CA (a mesh
/// certificate never authenticates to the API): it signs X.509 SVIDs, short-lived certificates
/// whose one URI subject alternative name is a SPIFFE ID, for the node proxies' requests.
public struct MeshCA: Sendable {
    let ca: ClusterCA

    public var certificatePEM: String { ca.certificatePEM }

    /// `pki/mesh-ca.crt` and `.key`, made on first use.
    public static func loadOrCreate(directory: String, clusterName: String = "kemu") throws -> MeshCA {
        try FileSystem.makeDirectories(directory, mode: 0o700)
        let (crt, key) = ("\(directory)/mesh-ca.crt", "\(directory)/mesh-ca.key")
        if let pair = try ClusterPKI.read(crt, key) { return MeshCA(ca: try ClusterCA(pair)) }
        let ca = try ClusterCA.generate(name: "\(clusterName)-mesh-ca")
        try ClusterPKI.write(ca.keyPair, crt, key)
        return MeshCA(ca: ca)
    }

    public init(generatingFor name: String) throws { ca = try ClusterCA.generate(name: "\(name)-mesh-ca") }

    init(ca: ClusterCA) { self.ca = ca }

    /// Checks a PEM certificate request (its own signature, exactly one SPIFFE ID asked for),
    /// lets `authorize` refuse that identity, and signs it for `seconds`: the certificate in PEM.
    /// Errors say what is wrong with the request.
    public func sign(requestPEM: String, seconds: Int, now: Date = Date(), authorize: (SPIFFEID) throws -> Void) throws -> String {
        let request: CertificateSigningRequest
        do {
            request = try CertificateSigningRequest(pemEncoded: requestPEM)
        } catch {
            throw MeshCAError("spec.request is not a PEM certificate request: \(error)")
        }
        guard request.publicKey.isValidSignature(request.signature, for: request) else {
            throw MeshCAError("the certificate request's signature does not match its key")
        }
        let names: [GeneralName] = ((try? request.attributes.extensionRequest?.extensions.subjectAlternativeNames) ?? nil).map(Array.init) ?? []
        let uris = names.compactMap { name -> String? in
            if case let .uniformResourceIdentifier(uri) = name { return uri }
            return nil
        }
        guard uris.count == 1, names.count == 1, let identity = SPIFFEID(uris[0]) else {
            throw MeshCAError("a mesh certificate request names exactly one SPIFFE ID (spiffe://DOMAIN/ns/NS/sa/SA) as its only subject alternative name; this one names \(uris.isEmpty ? "none" : uris.joined(separator: ", "))")
        }
        try authorize(identity)
        let certificate = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: request.publicKey,
            // A minute back: a node whose clock is a little behind still accepts it.
            notValidBefore: now.addingTimeInterval(-60), notValidAfter: now.addingTimeInterval(Double(seconds)),
            issuer: ca.certificate.subject, subject: DistinguishedName(), signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
                AuthorityKeyIdentifier(keyIdentifier: SubjectKeyIdentifier(hash: Certificate.PublicKey(ca.key.publicKey)).keyIdentifier)
                Critical(SubjectAlternativeNames([.uniformResourceIdentifier(identity.description)]))
            },
            issuerPrivateKey: .init(ca.key))
        return try certificate.serializeAsPEM().pemString
    }
}

public struct MeshCAError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// What a node proxy makes and reads of SVIDs.
public enum SVID {
    /// A new P-256 key and a request for `identity` signed with it, both PEM.
    public static func request(for identity: SPIFFEID) throws -> (requestPEM: String, keyPEM: String) {
        let key = P256.Signing.PrivateKey()
        let extensions = try Certificate.Extensions {
            Critical(SubjectAlternativeNames([.uniformResourceIdentifier(identity.description)]))
        }
        let request = try CertificateSigningRequest(
            version: .v1, subject: DistinguishedName(), privateKey: .init(key),
            attributes: try CertificateSigningRequest.Attributes([.init(ExtensionRequest(extensions: extensions))]),
            signatureAlgorithm: .ecdsaWithSHA256)
        return (try request.serializeAsPEM().pemString, key.pemRepresentation)
    }

    /// What a node proxy reads of an SVID: its SPIFFE ID, validity and serial (lowercase hex).
    public struct Read: Sendable, Equatable {
        public var id: SPIFFEID
        public var notBefore: Date
        public var notAfter: Date
        public var serial: String

        public init(id: SPIFFEID, notBefore: Date, notAfter: Date, serial: String) {
            (self.id, self.notBefore, self.notAfter, self.serial) = (id, notBefore, notAfter, serial)
        }
    }

    /// The SPIFFE ID, validity and serial of a certificate (DER), or nil when it names none.
    public static func identity(certificateDER der: [UInt8]) -> Read? {
        guard let certificate = try? Certificate(derEncoded: der) else { return nil }
        return identity(certificate)
    }

    public static func identity(certificatePEM pem: String) -> Read? {
        guard let certificate = try? Certificate(pemEncoded: pem) else { return nil }
        return identity(certificate)
    }

    static func identity(_ certificate: Certificate) -> Read? {
        guard let names = try? certificate.extensions.subjectAlternativeNames else { return nil }
        for name in names {
            if case let .uniformResourceIdentifier(uri) = name, let id = SPIFFEID(uri) {
                return Read(id: id, notBefore: certificate.notValidBefore, notAfter: certificate.notValidAfter,
                            serial: serialText(certificate.serialNumber.bytes))
            }
        }
        return nil
    }

    /// A serial as `kemu.dev/revoked-certificates` writes it: lowercase hex, no leading zeros.
    public static func serialText<Bytes: Collection>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        let digits = Array("0123456789abcdef")
        let text = String(bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] }.drop { $0 == "0" })
        return text.isEmpty ? "0" : text
    }
}
