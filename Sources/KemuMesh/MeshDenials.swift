import Foundation
import KemuAPI
import KemuClient
import KemuIP
import Logging
import Synchronization

/// Connections the mesh refused on this node: counted per policy (for /metrics), and told as
/// Warning Events on the AuthorizationPolicy (or the pod, for a STRICT refusal), at most one per
/// policy every 5 s, saying how many and from whom.
public final class MeshDenials: Sendable {
    struct Pending {
        var count = 0
        var example = ""
        var object: JSON = [:]
        var kind = ""
        var apiVersion = ""
    }

    let client: APIClient
    let node: String
    let logger = Logger(label: "kemu.mesh.denials")
    let state = Mutex<(totals: [String: Int], pending: [String: Pending])>(([:], [:]))

    init(client: APIClient, node: String) {
        self.client = client
        self.node = node
    }

    func record(policy: AuthorizationPolicy?, peer: SPIFFEID?, source: IPv4Address?, destination: MeshDirectory.LocalPod, port: UInt16) {
        let key = policy.map { "\($0.namespace)/\($0.name)" } ?? "STRICT \(destination.namespace)/\(destination.name)"
        let who = peer?.principal ?? "plaintext \(source?.description ?? "client")"
        state.withLock { s in
            s.totals[policy.map { "\($0.namespace)/\($0.name)" } ?? "peerauthentication-strict", default: 0] += 1
            var p = s.pending[key] ?? Pending()
            p.count += 1
            p.example = "\(who) to \(destination.namespace)/\(destination.name):\(port)"
            if let policy {
                (p.object.namespace, p.object.name, p.kind, p.apiVersion) = (policy.namespace, policy.name, "AuthorizationPolicy", "security.istio.io/v1")
            } else {
                (p.object.namespace, p.object.name, p.object.uid, p.kind, p.apiVersion) = (destination.namespace, destination.name, destination.uid, "Pod", "v1")
            }
            s.pending[key] = p
        }
    }

    func run() async throws {
        while !Task.isCancelled {
            try await Task.sleep(for: .seconds(5))
            let due = state.withLock { s in defer { s.pending.removeAll() }; return s.pending }
            for (_, p) in due {
                let reason = p.kind == "Pod" ? "PlaintextRefused" : "ConnectionDenied"
                let message = p.kind == "Pod"
                    ? "node \(node) refused \(p.count) plaintext connection(s) to a STRICT pod (PeerAuthentication), e.g. \(p.example)"
                    : "node \(node) denied \(p.count) connection(s), e.g. \(p.example)"
                let event = Events.make(for: p.object, kind: p.kind, apiVersion: p.apiVersion, type: "Warning", reason: reason, message: message,
                                        component: "kemu-mesh", host: node, at: Timestamp.now())
                do { _ = try await client.create(APIResources.events, event) } catch { logger.debug("event \(reason): \(error)") }
            }
        }
    }

    /// Every refusal counted here, whichever policy.
    var total: Int { state.withLock { $0.totals.values.reduce(0, +) } }

    var text: String {
        let totals = state.withLock { $0.totals }
        var text = "# HELP kemu_mesh_denied_total Connections the mesh refused on this node, by AuthorizationPolicy (or peerauthentication-strict).\n"
        text += "# TYPE kemu_mesh_denied_total counter\n"
        for (policy, count) in totals.sorted(by: { $0.key < $1.key }) { text += "kemu_mesh_denied_total{policy=\"\(policy)\"} \(count)\n" }
        return text
    }
}
