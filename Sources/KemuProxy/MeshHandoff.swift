import KemuIP
import KemuSystem

/// What the mesh makes of a dial.
public enum MeshDial: Sendable {
    /// Not the mesh's: a plain client to a plain endpoint, or the same node's pod (allowed).
    case direct
    /// Through a tunnel to the endpoint's node proxy: the engine hands the client's socket to
    /// the carrier, which reports back (`TunnelReport`).
    case tunnel(MeshCarrier)
    /// Refused here (authorization, or a plaintext client of a STRICT pod): not the endpoint's
    /// fault, and every endpoint would say the same.
    case refused
}

/// Carries connections to meshed endpoints (mutual TLS between node proxies) and judges those
/// to this node's meshed pods.
public protocol MeshTunnels: Sendable {
    /// Called on the engine's thread for each dial: it must not block.
    func dial(client: SocketAddress, endpoint: EndpointSpec) -> MeshDial
    /// The engine wants a carried connection ended (its endpoint's drain time is up, or the
    /// engine stops): the client is reset, and the connection reported closed.
    func close(token: UInt64)
    /// Moves when the mesh's policies change: the engine judges what it carries itself again.
    var policyGeneration: Int { get }
    /// Whether a connection the engine carries itself (not tunnelled) is still allowed.
    func allows(client: SocketAddress, endpoint: EndpointSpec) -> Bool
    /// The pod with this address, as an endpoint names it (its node, "namespace/name"), for a
    /// captured connection to a pod's own address; nil when unknown.
    func locate(_ address: IPv4Address) -> (node: String, target: String)?
    /// The proxy listens for captured connections now: the mesh may send them (its nftables).
    func captureReady()
}

/// Takes a connection the engine hands over (`MeshDial.tunnel`).
public struct MeshCarrier: Sendable {
    let carry: @Sendable (MeshHandoff) -> Void

    public init(_ carry: @escaping @Sendable (MeshHandoff) -> Void) { self.carry = carry }
}

/// A client connection given to the mesh. The client's bytes then go from its socket straight
/// into the tunnel (no hop through the engine); the engine keeps the connection's accounts —
/// the endpoint's slot, retries, replay and ejection — from the reports.
public struct MeshHandoff: Sendable {
    /// Names the connection in reports.
    public let token: UInt64
    /// The client's socket, the mesh's to read, write and close (or give back).
    public let client: Int32
    /// What the client sent that the engine holds (a replay): sent first.
    public let flight: [UInt8]
    /// The client had ended its side after `flight`.
    public let clientEnded: Bool
    /// How long the endpoint's node may take to answer the CONNECT.
    public let timeoutNanoseconds: UInt64
    /// A copy of what the client sends is kept until the endpoint's first byte, at most this
    /// much, for a replay (`TunnelReport.returned`); 0: none.
    public let replayBytes: Int
    /// Where reports go: the engine's inbox.
    public let inbox: EngineInbox

    /// Reports what became of the connection, waking the engine's thread.
    public func report(_ report: TunnelReport) {
        inbox.send([.tunnel(report, at: monotonicNanoseconds())])
    }

    /// Reports without waking the engine's thread, as it happened `at` (monotonic
    /// nanoseconds); returns the mark with which the caller wakes it (`inbox.wake`) once the
    /// report can wait no longer.
    public func post(_ report: TunnelReport, at: UInt64) -> Int {
        inbox.post([.tunnel(report, at: at)])
    }
}

/// What became of a carried connection, in order: `connected`, then `answered`, then `closed`;
/// or, before `answered`, `returned`.
public enum TunnelReport: Sendable {
    /// The endpoint's node reached the endpoint (the CONNECT's 200).
    case connected(token: UInt64)
    /// The endpoint's first byte came back: no replay from now on.
    case answered(token: UInt64)
    /// The client's socket is the engine's again (`client`, a descriptor of the same socket),
    /// with all it sent (`flight`, and whether it ended its side). Before `connected`, `error`
    /// says why the dial failed (EACCES: refused by authorization, not the endpoint's fault);
    /// after it, the endpoint ended the connection unanswered: a replay elsewhere.
    case returned(token: UInt64, client: Int32, error: Int32, flight: [UInt8], clientEnded: Bool)
    /// The connection is over, the client's socket closed by the mesh.
    case closed(token: UInt64, bytesUp: Int, bytesDown: Int)
}
