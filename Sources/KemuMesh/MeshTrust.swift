import Foundation
import KemuAPI
import KemuClient
import KemuPKI
import NIOCore
import Synchronization

/// What the control plane says about certificates and this node's clock, read from the Node
/// objects: the serials revoked on each node (`kemu.dev/revoked-certificates`, the failover lab's
/// `kemu mesh revoke`) and this node's clock skew (`kemu.dev/clock-skew`, `kemu mesh skew`).
/// Every peer certificate a tunnel meets is judged here after the TLS handshake: a revoked one,
/// or one not valid by this node's clock, ends the tunnel. Nothing here is on the per-byte path.
public final class MeshTrust: Sendable {
    struct State {
        var revokedByNode: [String: Set<String>] = [:]
        var revoked: Set<String> = []
        var skew: TimeInterval = 0
    }

    let node: String
    let state = Mutex(State())
    /// Moves when the revoked serials or the skew change: open tunnels are judged again then.
    let generation = Atomic<Int>(0)

    init(node: String) { self.node = node }

    /// This node's clock: the machine's, skewed as its Node says.
    public var now: Date { Date().addingTimeInterval(skew) }
    public var skew: TimeInterval { state.withLock { $0.skew } }

    public func isRevoked(_ serial: String) -> Bool { state.withLock { $0.revoked.contains(serial) } }
    public var revokedCount: Int { state.withLock { $0.revoked.count } }

    /// Why this node refuses a peer's certificate, or nil when it does not: revoked, or not
    /// valid by this node's clock (BoringSSL has judged it by the machine's already).
    public func refusal(_ certificate: SVID.Read) -> String? {
        let (revoked, now) = state.withLock { ($0.revoked.contains(certificate.serial), Date().addingTimeInterval($0.skew)) }
        if revoked { return "certificate \(certificate.serial) of \(certificate.id) is revoked" }
        if now > certificate.notAfter { return "certificate of \(certificate.id) expired at \(Timestamp.format(certificate.notAfter)) by this node's clock (\(Timestamp.format(now)))" }
        if now < certificate.notBefore { return "certificate of \(certificate.id) is not valid before \(Timestamp.format(certificate.notBefore)) by this node's clock (\(Timestamp.format(now)))" }
        return nil
    }

    /// The same for a tunnel: its peer's certificate, or the one this side presented (`local`,
    /// a serial) revoked.
    func refusal(peer: SVID.Read, local: String) -> String? {
        refusal(peer) ?? (isRevoked(local) ? "this side's certificate \(local) is revoked" : nil)
    }

    /// A Node added, changed or removed; returns whether anything here changed.
    @discardableResult
    func nodeEvent(_ event: InformerEvent) -> Bool {
        let changed = state.withLock { s in
            let before = (s.revoked, s.skew)
            switch event {
            case let .added(n), let .updated(_, n):
                let annotations = n.annotations
                s.revokedByNode[n.name] = Set(Mesh.revokedSerials(annotations[Mesh.revokedAnnotation] ?? "").map(\.serial))
                if n.name == node { s.skew = annotations[Mesh.clockSkewAnnotation].flatMap(Mesh.clockSkew) ?? 0 }
            case let .deleted(n):
                s.revokedByNode[n.name] = nil
                if n.name == node { s.skew = 0 }
            case .synced: break
            }
            s.revoked = s.revokedByNode.values.reduce(into: Set<String>()) { $0.formUnion($1) }
            return before != (s.revoked, s.skew)
        }
        if changed { generation.add(1, ordering: .relaxed) }
        return changed
    }
}

/// The tunnels open on this node, both ways, with the certificates on each side: when the trust
/// changes (a revocation, a clock moved) those it now condemns are closed, their connections
/// with them, as a peer that learnt of a revocation would.
final class TunnelBook: Sendable {
    struct Entry: Sendable {
        var peer: SVID.Read
        var local: String
        var channel: any Channel
        /// The mesh loop the tunnel is on; nil: the channel's own event loop.
        var loop: MeshLoop?

        /// Runs `body` with the channel on the loop it belongs to.
        func onItsLoop(_ body: @escaping @Sendable (any Channel) -> Void) {
            let channel = channel
            if let loop { loop.execute { body(channel) } } else { channel.eventLoop.execute { body(channel) } }
        }
    }

    let trust: MeshTrust
    let open = Mutex<[ObjectIdentifier: Entry]>([:])

    init(trust: MeshTrust) { self.trust = trust }

    func add(peer: SVID.Read, local: String, channel: any Channel, loop: MeshLoop? = nil) {
        let key = ObjectIdentifier(channel)
        open.withLock { $0[key] = Entry(peer: peer, local: local, channel: channel, loop: loop) }
        channel.closeFuture.whenComplete { [self] _ in _ = open.withLock { $0.removeValue(forKey: key) } }
    }

    /// Runs `body` with every open tunnel's channel, each on its own loop.
    func eachOnItsLoop(_ body: @escaping @Sendable (any Channel) -> Void) {
        for entry in open.withLock({ Array($0.values) }) { entry.onItsLoop(body) }
    }

    /// Closes the tunnels the trust now refuses; returns why, one line each.
    func judge() -> [String] {
        let all = open.withLock { Array($0.values) }
        var closed: [String] = []
        for tunnel in all {
            guard let why = trust.refusal(peer: tunnel.peer, local: tunnel.local) else { continue }
            tunnel.onItsLoop { $0.close(promise: nil) }
            closed.append(why)
        }
        return closed
    }
}
