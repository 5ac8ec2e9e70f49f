import Foundation
import Yams

/// The part of a kubeconfig a client needs: the server, the CA that signed its certificate, and
/// the caller's client certificate or bearer token. `render` writes the file `kemu server` hands
/// to kubectl (certificates inline, so it works wherever it is copied); `load` reads that file
/// or any kubeconfig using inline data or file paths.
public struct Kubeconfig: Sendable, Equatable {
    public var server: String
    public var cluster: String
    public var certificateAuthorityPEM: String?
    public var clientCertificatePEM: String?
    public var clientKeyPEM: String?
    public var token: String?
    /// The context's default namespace.
    public var namespace: String
    /// Who the credentials are for, naming the kubeconfig's user entry (default: the admin).
    public var user: String?

    public init(server: String, cluster: String = "kemu", certificateAuthorityPEM: String? = nil,
                clientCertificatePEM: String? = nil, clientKeyPEM: String? = nil, token: String? = nil,
                namespace: String = "default", user: String? = nil) {
        self.server = server
        self.cluster = cluster
        self.certificateAuthorityPEM = certificateAuthorityPEM
        self.clientCertificatePEM = clientCertificatePEM
        self.clientKeyPEM = clientKeyPEM
        self.token = token
        self.namespace = namespace
        self.user = user
    }

    public func render() -> String {
        var clusterLines = ["    server: \(server)"]
        if let ca = certificateAuthorityPEM { clusterLines.append("    certificate-authority-data: \(Self.base64(ca))") }
        var userLines: [String] = []
        if let certificate = clientCertificatePEM { userLines.append("    client-certificate-data: \(Self.base64(certificate))") }
        if let key = clientKeyPEM { userLines.append("    client-key-data: \(Self.base64(key))") }
        if let token { userLines.append("    token: \(token)") }
        let entry = "\(cluster)-" + String((user ?? "admin").map { $0.isLetter || $0.isNumber ? $0 : "-" })
        return """
        apiVersion: v1
        kind: Config
        clusters:
        - name: \(cluster)
          cluster:
        \(clusterLines.joined(separator: "\n"))
        users:
        - name: \(entry)
          user:\(userLines.isEmpty ? " {}" : "\n" + userLines.joined(separator: "\n"))
        contexts:
        - name: \(cluster)
          context:
            cluster: \(cluster)
            user: \(entry)
            namespace: \(namespace)
        current-context: \(cluster)

        """
    }

    static func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }

    /// Reads the current context of a kubeconfig file. Relative certificate paths are taken
    /// from the file's directory, as kubectl does.
    public static func load(path: String) throws -> Kubeconfig {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ClientError.kubeconfig(path, "cannot be read: \(error.localizedDescription)")
        }
        return try parse(text, path: path)
    }

    public static func parse(_ text: String, path: String = "kubeconfig") throws -> Kubeconfig {
        let fail = { (message: String) in ClientError.kubeconfig(path, message) }
        let root: [String: Any]
        do {
            guard let loaded = try Yams.load(yaml: text) as? [String: Any] else { throw fail("is not a YAML mapping") }
            root = loaded
        } catch let error as ClientError {
            throw error
        } catch {
            throw fail("is not valid YAML: \(error)")
        }
        func entry(_ list: String, _ name: String) throws -> [String: Any] {
            let items = root[list] as? [[String: Any]] ?? []
            guard let item = items.first(where: { $0["name"] as? String == name }) else { throw fail("\(list): no entry named \"\(name)\"") }
            return item[String(list.dropLast())] as? [String: Any] ?? [:]
        }
        guard let current = root["current-context"] as? String, !current.isEmpty else { throw fail("current-context is not set") }
        let context = try entry("contexts", current)
        guard let clusterName = context["cluster"] as? String else { throw fail("contexts[\(current)].context.cluster is missing") }
        let cluster = try entry("clusters", clusterName)
        let user = try (context["user"] as? String).map { try entry("users", $0) } ?? [:]
        guard let server = cluster["server"] as? String, !server.isEmpty else { throw fail("clusters[\(clusterName)].cluster.server is missing") }
        let directory = (path as NSString).deletingLastPathComponent
        func pem(_ fields: [String: Any], data key: String, file fileKey: String) throws -> String? {
            if let encoded = fields[key] as? String {
                guard let bytes = Data(base64Encoded: encoded) else { throw fail("\(key) is not base64") }
                return String(decoding: bytes, as: UTF8.self)
            }
            guard let file = fields[fileKey] as? String else { return nil }
            let full = file.hasPrefix("/") ? file : "\(directory)/\(file)"
            do { return try String(contentsOfFile: full, encoding: .utf8) } catch { throw fail("\(fileKey) \(full) cannot be read") }
        }
        return Kubeconfig(
            server: server, cluster: clusterName,
            certificateAuthorityPEM: try pem(cluster, data: "certificate-authority-data", file: "certificate-authority"),
            clientCertificatePEM: try pem(user, data: "client-certificate-data", file: "client-certificate"),
            clientKeyPEM: try pem(user, data: "client-key-data", file: "client-key"),
            token: user["token"] as? String,
            namespace: context["namespace"] as? String ?? "default")
    }
}
