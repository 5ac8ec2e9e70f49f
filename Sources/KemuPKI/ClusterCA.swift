import Crypto
import Foundation
import SwiftASN1
import X509

/// A certificate and its private key, both PEM: what a TLS server or client loads.
public struct KeyPair: Sendable, Equatable {
    public var certificatePEM: String
    public var privateKeyPEM: String

    public init(certificatePEM: String, privateKeyPEM: String) {
        self.certificatePEM = certificatePEM
        self.privateKeyPEM = privateKeyPEM
    }
}

/// The cluster's certificate authority: one ECDSA P-256 key that signs the API server's serving
/// certificate and every client certificate (admin, nodes). Upstream kubeadm keeps the same
/// layout; kemu keeps it under `DATA-DIR/pki/`.
public struct ClusterCA: Sendable {
    public let certificate: Certificate
    let key: P256.Signing.PrivateKey

    public var certificatePEM: String { (try? certificate.serializeAsPEM().pemString) ?? "" }

    /// A new self-signed CA valid for ten years.
    public static func generate(name: String, now: Date = Date()) throws -> ClusterCA {
        let key = P256.Signing.PrivateKey()
        let subject = try DistinguishedName { CommonName(name) }
        let certificate = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(10 * 365 * 86400),
            issuer: subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(digitalSignature: true, keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: Certificate.PublicKey(key.publicKey))
            },
            issuerPrivateKey: .init(key))
        return ClusterCA(certificate: certificate, key: key)
    }

    /// The CA from its PEM files.
    public init(_ pair: KeyPair) throws {
        certificate = try Certificate(pemEncoded: pair.certificatePEM)
        key = try P256.Signing.PrivateKey(pemRepresentation: pair.privateKeyPEM)
    }

    init(certificate: Certificate, key: P256.Signing.PrivateKey) {
        self.certificate = certificate
        self.key = key
    }

    public var keyPair: KeyPair {
        KeyPair(certificatePEM: certificatePEM, privateKeyPEM: key.pemRepresentation)
    }

    /// A serving certificate for the API server, valid for every name and address clients use.
    public func issueServing(commonName: String, dnsNames: [String], addresses: [[UInt8]], now: Date = Date()) throws -> KeyPair {
        let names = dnsNames.map { GeneralName.dnsName($0) } + addresses.map { GeneralName.ipAddress(ASN1OctetString(contentBytes: $0[...])) }
        return try issue(subject: DistinguishedName { CommonName(commonName) }, usage: .serverAuth, names: names, now: now)
    }

    /// A client certificate: Kubernetes reads the user from the common name and the groups from
    /// the organizations (`system:masters` for the admin, `system:nodes` for node agents).
    public func issueClient(user: String, groups: [String], now: Date = Date()) throws -> KeyPair {
        let subject = try DistinguishedName {
            for group in groups { OrganizationName(group) }
            CommonName(user)
        }
        return try issue(subject: subject, usage: .clientAuth, names: [], now: now)
    }

    func issue(subject: DistinguishedName, usage: ExtendedKeyUsage.Usage, names: [GeneralName], now: Date) throws -> KeyPair {
        let key = P256.Signing.PrivateKey()
        let certificate = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(365 * 86400),
            issuer: self.certificate.subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([usage])
                AuthorityKeyIdentifier(keyIdentifier: SubjectKeyIdentifier(hash: Certificate.PublicKey(self.key.publicKey)).keyIdentifier)
                if !names.isEmpty { SubjectAlternativeNames(names) }
            },
            issuerPrivateKey: .init(self.key))
        return KeyPair(certificatePEM: try certificate.serializeAsPEM().pemString, privateKeyPEM: key.pemRepresentation)
    }
}

/// Who a verified client certificate says the caller is.
public struct Identity: Sendable, Equatable, CustomStringConvertible {
    public var user: String
    public var groups: [String]

    public init(user: String, groups: [String]) {
        self.user = user
        self.groups = groups
    }

    /// The user (common name) and groups (organizations) of a certificate in DER.
    public init(certificateDER der: [UInt8]) throws {
        let certificate = try Certificate(derEncoded: der)
        var user = ""
        var groups: [String] = []
        for rdn in certificate.subject {
            for attribute in rdn {
                guard let value = String(attribute.value) else { continue }
                if attribute.type == .RDNAttributeType.commonName { user = value }
                if attribute.type == .RDNAttributeType.organizationName { groups.append(value) }
            }
        }
        self.init(user: user, groups: groups)
    }

    public var description: String { groups.isEmpty ? user : "\(user) (\(groups.joined(separator: ", ")))" }
}
