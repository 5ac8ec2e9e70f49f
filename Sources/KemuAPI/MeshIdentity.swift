/// A workload's identity in the mesh, as a SPIFFE ID: `spiffe://<trust domain>/ns/<namespace>/sa/<account>`
/// for a pod's ServiceAccount (Istio's form), `spiffe://<trust domain>/kemu/node/<name>` for a node's
/// proxy (what a tunnel's server side presents). The trust domain is the cluster domain.
public struct SPIFFEID: Hashable, Sendable, CustomStringConvertible, Comparable {
    public var trustDomain: String
    /// The path's segments (`["ns", "default", "sa", "web"]`).
    public var segments: [String]

    public init(trustDomain: String, segments: [String]) {
        self.trustDomain = trustDomain
        self.segments = segments
    }

    public static func workload(domain: String, namespace: String, serviceAccount: String) -> SPIFFEID {
        SPIFFEID(trustDomain: domain, segments: ["ns", namespace, "sa", serviceAccount])
    }

    public static func node(domain: String, name: String) -> SPIFFEID {
        SPIFFEID(trustDomain: domain, segments: ["kemu", "node", name])
    }

    /// Parses `spiffe://domain/path`: a lower-case trust domain of letters, digits, dots, dashes
    /// and underscores; path segments non-empty, none `.` or `..` (the SPIFFE ID standard).
    public init?(_ uri: String) {
        guard uri.hasPrefix("spiffe://"), uri.utf8.count <= 2048 else { return nil }
        let rest = uri.dropFirst("spiffe://".count)
        let parts = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard let domain = parts.first, !domain.isEmpty,
              domain.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2e || $0 == 0x2d || $0 == 0x5f })
        else { return nil }
        let path = Array(parts.dropFirst())
        for segment in path {
            guard !segment.isEmpty, segment != ".", segment != "..",
                  segment.utf8.allSatisfy({ Self.segmentCharacter($0) }) else { return nil }
        }
        self.init(trustDomain: domain, segments: path)
    }

    static func segmentCharacter(_ c: UInt8) -> Bool {
        (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c == 0x2e || c == 0x2d || c == 0x5f || c == 0x3a
    }

    public var description: String { "spiffe://\(trustDomain)/" + segments.joined(separator: "/") }

    /// The namespace and ServiceAccount of a workload identity.
    public var workload: (namespace: String, serviceAccount: String)? {
        segments.count == 4 && segments[0] == "ns" && segments[2] == "sa" ? (segments[1], segments[3]) : nil
    }

    /// The node of a node proxy's identity.
    public var nodeName: String? {
        segments.count == 3 && segments[0] == "kemu" && segments[1] == "node" ? segments[2] : nil
    }

    /// Istio's principal form, without the scheme: `cluster.local/ns/default/sa/web`.
    public var principal: String { trustDomain + "/" + segments.joined(separator: "/") }

    public static func < (a: SPIFFEID, b: SPIFFEID) -> Bool { a.description < b.description }
}

/// The mesh's names shared by the control plane (the signer), the node proxies and the CLI.
public enum Mesh {
    /// The signerName of a CertificateSigningRequest the mesh CA signs.
    public static let signerName = "kemu.dev/mesh"
    /// A namespace with this label set to `enabled` has its pods in the mesh.
    public static let namespaceLabel = "kemu.dev/mesh"
    /// The port node proxies accept tunnels on (HBONE's).
    public static let tunnelPort: UInt16 = 15008
    /// A certificate's lifetime when the request names none (Istio's 24 h).
    public static let defaultCertificateSeconds = 86400
    /// Upstream's floor for `spec.expirationSeconds`.
    public static let minimumCertificateSeconds = 600
    /// While a file of this name is in the control plane's data directory the mesh CA answers
    /// nothing (the failover lab's `kemu stop mesh-ca`).
    public static let caStopFile = "mesh-ca.stopped"

    /// Whether the namespace's labels put its pods in the mesh.
    public static func enabled(labels: [String: String]) -> Bool { labels[namespaceLabel] == "enabled" }
}
