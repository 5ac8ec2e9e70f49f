import Foundation

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
    /// Where a node proxy takes the connections to pods' own addresses it carries or judges: a
    /// meshed pod's to another node's meshed pod, and those into its meshed pods that no proxy
    /// judged yet (TPROXY; ztunnel's capture port).
    public static let capturePort: UInt16 = 15001
    /// A certificate's lifetime when the request names none (Istio's 24 h).
    public static let defaultCertificateSeconds = 86400
    /// Upstream's floor for `spec.expirationSeconds`.
    public static let minimumCertificateSeconds = 600
    /// While a file of this name is in the control plane's data directory the mesh CA answers
    /// nothing (the failover lab's `kemu stop mesh-ca`).
    public static let caStopFile = "mesh-ca.stopped"

    /// On a Node: the certificates issued to its proxy that the control plane revoked (the
    /// failover lab's `kemu mesh revoke`), `SERIAL@EXPIRY` (hex serial, Unix seconds) separated
    /// by commas. Every proxy refuses them; the node asks for new ones.
    public static let revokedAnnotation = "kemu.dev/revoked-certificates"
    /// On a Node: how far its proxy's clock is from the machine's, a signed Go duration ("25h",
    /// "-90m"; `kemu mesh skew`). The proxy judges certificates' validity and its own renewals
    /// by that clock.
    public static let clockSkewAnnotation = "kemu.dev/clock-skew"
    /// The most a clock may be skewed: ten years.
    public static let maximumSkewSeconds = 315_360_000.0

    /// Whether the namespace's labels put its pods in the mesh.
    public static func enabled(labels: [String: String]) -> Bool { labels[namespaceLabel] == "enabled" }

    /// The revoked serials an annotation lists, with when each expires (nil: not said); entries
    /// that are not a hex serial (1–40 digits) with an optional `@seconds` are left out.
    public static func revokedSerials(_ text: String) -> [(serial: String, expires: Int?)] {
        text.split(separator: ",").compactMap { entry in
            let parts = entry.trimmingCharacters(in: .whitespaces).split(separator: "@", omittingEmptySubsequences: false)
            guard parts.count <= 2, let serial = parts.first, (1...40).contains(serial.count),
                  serial.allSatisfy({ $0.isHexDigit && $0.isASCII }) else { return nil }
            // As SVID.serialText writes it: lowercase, no leading zeros.
            let digits = serial.lowercased().drop { $0 == "0" }
            let canonical = digits.isEmpty ? "0" : String(digits)
            if parts.count == 2 {
                guard let expires = Int(parts[1]), expires >= 0 else { return nil }
                return (canonical, expires)
            }
            return (canonical, nil)
        }
    }

    /// A clock skew: a Go duration with an optional sign, at most ten years either way; nil
    /// for anything else.
    public static func clockSkew(_ text: String) -> Double? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let negative = trimmed.hasPrefix("-")
        let body = trimmed.hasPrefix("-") || trimmed.hasPrefix("+") ? String(trimmed.dropFirst()) : trimmed
        guard let seconds = body == "0" ? 0 : FailureAccrual.goDurationSeconds(body), seconds <= maximumSkewSeconds else { return nil }
        return negative ? -seconds : seconds
    }
}
