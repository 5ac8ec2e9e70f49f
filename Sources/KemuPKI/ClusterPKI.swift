import Foundation
import KemuSystem

/// The cluster's certificates and tokens under one directory (`DATA-DIR/pki`), made on first
/// start and reused after:
///
///     ca.crt ca.key             the cluster CA
///     apiserver.crt .key        the serving certificate, reissued at every start for the
///                               addresses the server listens on
///     admin.crt admin.key       kemu-admin in system:masters, for the kubeconfig
///     tokens.csv                bearer tokens, upstream's static token file format:
///                               token,user,uid,"group1,group2"
///     sa.key                    the ServiceAccount token signing key (ES256)
///
/// Keys are written 0600. A directory left half-made by a crash is completed, not trusted: a
/// missing CA file means a new CA and a new admin certificate.
public struct ClusterPKI: Sendable {
    public let directory: String
    public let ca: ClusterCA
    public let admin: KeyPair
    /// Bearer token → who it authenticates.
    public let tokens: [String: Identity]
    /// The token of the first kemu-admin line, for clients that cannot present a certificate.
    public let adminToken: String
    /// Signs and verifies ServiceAccount tokens.
    public let serviceAccounts: TokenSigner

    public static let adminIdentity = Identity(user: "kemu-admin", groups: ["system:masters"])

    public static func loadOrCreate(directory: String, clusterName: String = "kemu") throws -> ClusterPKI {
        try FileSystem.makeDirectories(directory, mode: 0o700)
        let path = { (name: String) in "\(directory)/\(name)" }
        var fresh = false
        let ca: ClusterCA
        if let pair = try read(path("ca.crt"), path("ca.key")) {
            ca = try ClusterCA(pair)
        } else {
            ca = try ClusterCA.generate(name: "\(clusterName)-ca")
            try write(ca.keyPair, path("ca.crt"), path("ca.key"))
            fresh = true
        }
        let admin: KeyPair
        if !fresh, let pair = try read(path("admin.crt"), path("admin.key")) {
            admin = pair
        } else {
            admin = try ca.issueClient(user: adminIdentity.user, groups: adminIdentity.groups)
            try write(admin, path("admin.crt"), path("admin.key"))
        }
        if !FileSystem.exists(path("tokens.csv")) {
            let line = "\(randomToken()),\(adminIdentity.user),\(adminIdentity.user),\"\(adminIdentity.groups.joined(separator: ","))\"\n"
            try FileSystem.writeFile(path("tokens.csv"), line, mode: 0o600)
        }
        let lines = try parseTokens(FileSystem.readFile(path("tokens.csv")), file: path("tokens.csv"))
        guard let adminToken = lines.first(where: { $0.identity.user == adminIdentity.user })?.token else {
            throw KemuError(.invalidArgument, "\(path("tokens.csv")) has no line for \(adminIdentity.user)")
        }
        return ClusterPKI(directory: directory, ca: ca, admin: admin,
                          tokens: Dictionary(lines.map { ($0.token, $0.identity) }, uniquingKeysWith: { first, _ in first }),
                          adminToken: adminToken, serviceAccounts: try TokenSigner.loadOrCreate(path("sa.key")))
    }

    /// Issues the API server's serving certificate for these names and addresses and writes it
    /// to apiserver.crt/.key (replacing the last one).
    public func issueServing(dnsNames: [String], addresses: [[UInt8]]) throws -> KeyPair {
        let pair = try ca.issueServing(commonName: "kube-apiserver", dnsNames: dnsNames, addresses: addresses)
        try Self.write(pair, "\(directory)/apiserver.crt", "\(directory)/apiserver.key")
        return pair
    }

    /// `token,user,uid,"group1,group2"` per line; the groups column is optional.
    static func parseTokens(_ text: String, file: String) throws -> [(token: String, identity: Identity)] {
        var result: [(token: String, identity: Identity)] = []
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let columns = line.split(separator: ",", maxSplits: 3, omittingEmptySubsequences: false).map(String.init)
            guard columns.count >= 3, !columns[0].isEmpty, !columns[1].isEmpty else {
                throw KemuError(.invalidArgument, "\(file) line \(index + 1): expected token,user,uid[,\"groups\"]")
            }
            let groups = columns.count == 4
                ? columns[3].trimmingCharacters(in: CharacterSet(charactersIn: "\"")).split(separator: ",").map(String.init) : []
            result.append((columns[0], Identity(user: columns[1], groups: groups)))
        }
        return result
    }

    static func randomToken() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<24).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
    }

    static func read(_ certificate: String, _ key: String) throws -> KeyPair? {
        guard FileSystem.exists(certificate), FileSystem.exists(key) else { return nil }
        return KeyPair(certificatePEM: try FileSystem.readFile(certificate), privateKeyPEM: try FileSystem.readFile(key))
    }

    /// The key first, the certificate last: a certificate on disk means its key is there too.
    static func write(_ pair: KeyPair, _ certificate: String, _ key: String) throws {
        try FileSystem.writeFile(key, pair.privateKeyPEM, mode: 0o600)
        try FileSystem.writeFile(certificate, pair.certificatePEM, mode: 0o644)
    }
}
