import Foundation
import Glibc
import KemuAgent
import KemuAPI
import KemuCluster
import KemuSystem

/// The failover lab's hands on the mesh: its CA stopped and started, a node's certificates
/// renewed or dropped as if expired. What breaks shows in an experiment's load (meshed
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

    private func meshProxy(_ node: String) throws -> pid_t {
        _ = try NodeAgent.nodeIndex(node, in: network)
        guard let pid = Daemon.pid("proxy-\(node)", cluster.files), Daemon.isKemu(pid) else {
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
