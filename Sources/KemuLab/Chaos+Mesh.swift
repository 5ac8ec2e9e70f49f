import Foundation
import Glibc
import KemuAgent
import KemuAPI
import KemuCluster
import KemuSystem

/// The failover lab's hands on the mesh: its CA stopped and started, a node's certificates
/// renewed, dropped as if expired or revoked, a node's clock skewed. What breaks shows in an experiment's load (meshed
/// connections refused while a node has no identity) and in `kemu mesh status`.
extension Chaos {
    /// The control plane's signer answers nothing while this file exists.
    var meshCAStopFile: String { "\(cluster.files.dataDir)/\(Mesh.caStopFile)" }

    public var meshCAStopped: Bool { access(meshCAStopFile, F_OK) == 0 }

    /// Stops the mesh CA: certificate requests wait unanswered (within 200 ms); identities
    /// already held keep working until they expire.
    public func stopMeshCA() async throws {
        guard !meshCAStopped else { throw KemuError(.invalidState, "the mesh CA is stopped already; start it with: kemu start mesh-ca") }
        try FileSystem.writeFile(meshCAStopFile, "stopped by kemu at \(Timestamp.now())\n")
        await recordCluster(type: "Warning", reason: "ChaosMeshCAStopped", message: "kemu stop mesh-ca: certificate requests wait unanswered")
    }

    /// Starts it again: what waited is answered.
    public func startMeshCA() async throws {
        guard meshCAStopped else { throw KemuError(.invalidState, "the mesh CA is running") }
        try FileSystem.removeFile(meshCAStopFile)
        await recordCluster(type: "Normal", reason: "ChaosMeshCAStarted", message: "kemu start mesh-ca: running again")
    }

    /// Renews every certificate the node's proxy holds, now (rotation on demand); the old ones
    /// serve until the new come.
    public func rotateCertificates(_ node: String) async throws {
        let pid = try meshProxy(node)
        kill(pid, SIGUSR1)
        await recordNode(node, type: "Normal", reason: "ChaosCertificatesRotated", message: "kemu mesh rotate: the proxy (pid \(pid)) renews every certificate now")
    }

    /// Drops every certificate the node's proxy holds, as if they had expired; it asks for new
    /// ones at once (and gets none while the mesh CA is stopped).
    public func expireCertificates(_ node: String) async throws {
        let pid = try meshProxy(node)
        kill(pid, SIGUSR2)
        await recordNode(node, type: "Warning", reason: "ChaosCertificatesExpired", message: "kemu mesh expire: the proxy (pid \(pid)) lost every certificate")
    }

    /// Revokes every certificate the node's proxy holds now: their serials go on its Node
    /// (`kemu.dev/revoked-certificates`, entries past their expiry pruned), every proxy refuses
    /// them and closes the tunnels they carry, and the node asks for new ones (none come while
    /// the mesh CA is stopped). Returns how many were revoked.
    @discardableResult
    public func revokeCertificates(_ node: String) async throws -> Int {
        _ = try meshProxy(node)
        guard let status = cluster.meshStatus(node: node) else {
            throw KemuError(.invalidState, "the proxy of \(node) does not answer on its status port (10249)")
        }
        let held: [(serial: String, expires: Int?)] = (status["certificates"]?.array ?? []).compactMap { c in
            guard let serial = c["serial"]?.string, let entry = Mesh.revokedSerials(serial).first else { return nil }
            return (entry.serial, c["notAfter"]?.string.flatMap(Timestamp.parse).map { Int($0.timeIntervalSince1970) })
        }
        guard !held.isEmpty else { throw KemuError(.invalidState, "the proxy of \(node) holds no certificate to revoke") }
        let now = Int(Date().timeIntervalSince1970)
        let current = try await cluster.client.get(APIResources.nodes, name: node).annotations[Mesh.revokedAnnotation] ?? ""
        var entries = Mesh.revokedSerials(current).filter { ($0.expires ?? Int.max) > now }
        for h in held where !entries.contains(where: { $0.serial == h.serial }) { entries.append(h) }
        let text = entries.map { $0.serial + ($0.expires.map { "@\($0)" } ?? "") }.joined(separator: ",")
        _ = try await cluster.client.patch(APIResources.nodes, name: node, ["metadata": ["annotations": [Mesh.revokedAnnotation: .string(text)]]])
        await recordNode(node, type: "Warning", reason: "ChaosCertificatesRevoked",
                         message: "kemu mesh revoke: \(held.count) certificate(s) of the proxy revoked (\(held.map(\.serial).joined(separator: ", ")))")
        return held.count
    }

    /// Skews the node's clock as its proxy sees it (a Go duration, "25h", "-90m"; "0" puts it
    /// right): certificates' validity and the node's renewals are judged by that clock.
    public func skewClock(_ node: String, by text: String) async throws {
        _ = try NodeAgent.nodeIndex(node, in: network)
        guard let seconds = Mesh.clockSkew(text) else {
            throw KemuError(.invalidArgument, "clock skew \"\(text)\": want a signed duration such as 25h, -90m or 0 (at most 10 years either way)")
        }
        let value: JSON = seconds == 0 ? .null : .string(text.trimmingCharacters(in: .whitespaces))
        _ = try await cluster.client.patch(APIResources.nodes, name: node, ["metadata": ["annotations": [Mesh.clockSkewAnnotation: value]]])
        await recordNode(node, type: seconds == 0 ? "Normal" : "Warning", reason: seconds == 0 ? "ChaosClockRestored" : "ChaosClockSkewed",
                         message: seconds == 0 ? "kemu mesh skew: the proxy's clock is the machine's again" : "kemu mesh skew: the proxy's clock runs \(text) from the machine's")
    }

    /// The node's clock skew now, as its Node says (0 when none).
    public func clockSkew(_ node: String) async -> Double {
        ((try? await cluster.client.get(APIResources.nodes, name: node))?.annotations[Mesh.clockSkewAnnotation]).flatMap(Mesh.clockSkew) ?? 0
    }

    private func meshProxy(_ node: String) throws -> pid_t {
        _ = try NodeAgent.nodeIndex(node, in: network)
        guard let pid = Daemon.running("proxy-\(node)", cluster.files) else {
            throw KemuError(.invalidState, "the proxy of \(node) is not running; start it with: kemu start proxy \(node)")
        }
        return pid
    }

    /// An Event about the cluster as a whole (on the default namespace).
    private func recordCluster(type: String, reason: String, message: String) async {
        var object: JSON = ["apiVersion": "v1", "kind": "Namespace"]
        object.name = "default"
        await record(object, kind: "Namespace", type: type, reason: reason, message: message)
    }
}
