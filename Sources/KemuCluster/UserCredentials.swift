import KemuClient
import KemuPKI
import KemuSystem

/// Credentials for another identity of a running cluster (`kemu user add`): a client certificate
/// the cluster CA signs, with the user as common name and the groups as organizations (how the
/// API server reads who is calling), in a kubeconfig of its own beside the admin's. What the user
/// may do is then up to RBAC: nothing but discovery until a binding grants more.
public enum UserCredentials {
    /// Writes `users/NAME.kubeconfig` (0600) in the cluster's state directory; returns its path.
    public static func add(cluster: String, user: String, groups: [String]) throws -> String {
        try check(user, what: "user name")
        for group in groups { try check(group, what: "--group") }
        let files = ClusterFiles(cluster: cluster)
        guard FileSystem.exists(files.kubeconfig) else {
            throw KemuError(.notFound, "cluster \(cluster) is not up (no \(files.kubeconfig)); start it with: kemu up --cluster \(cluster)")
        }
        let admin = try Kubeconfig.load(path: files.kubeconfig)
        let pki = try ClusterPKI.loadOrCreate(directory: "\(files.dataDir)/pki", clusterName: cluster)
        let pair = try pki.ca.issueClient(user: user, groups: groups)
        let kubeconfig = Kubeconfig(server: admin.server, cluster: cluster, certificateAuthorityPEM: pki.ca.certificatePEM,
                                    clientCertificatePEM: pair.certificatePEM, clientKeyPEM: pair.privateKeyPEM, user: user)
        let directory = "\(files.state)/users"
        try FileSystem.makeDirectories(directory, mode: 0o700)
        let path = "\(directory)/\(user.replacingOccurrences(of: ":", with: "_")).kubeconfig"
        try FileSystem.writeFile(path, kubeconfig.render(), mode: 0o600)
        return path
    }

    /// A name that fits a certificate subject and a file name: printable, no slash, not empty.
    static func check(_ name: String, what: String) throws {
        guard !name.isEmpty, name.count <= 128, !name.contains("/"), !name.hasPrefix("."),
              name.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F }) else {
            throw KemuError(.invalidArgument, "\(what) \"\(name)\": use 1-128 printable ASCII characters, no spaces, no '/', not starting with '.'")
        }
    }
}
