import Foundation
import KemuAPI
import KemuClient
import KemuIP
import Logging
import NIOCore

/// The mesh half of a node's proxy: follows what is meshed (`MeshDirectory`), keeps the SVIDs of
/// the node and its meshed pods (`MeshIdentities`), accepts tunnels on port 15008
/// (`TunnelServer`) and opens them for the engine (`TunnelClient`, the engine's `MeshTunnels`).
/// One event loop thread carries every tunnel; the engine's thread carries every plain byte.
public final class MeshNode: Sendable {
    public struct Config: Sendable {
        public var node: String
        public var trustDomain: String
        /// Every namespace in the mesh, whatever its labels.
        public var clusterWide = false
        /// Where tunnels are accepted (the node's address).
        public var address: IPv4Address
        /// Tunnelled connections reach pods from their client's address (needs the proxy's
        /// `TransparentDial` in place).
        public var transparent = true
        public var certificateSeconds = Mesh.defaultCertificateSeconds

        public init(node: String, trustDomain: String, address: IPv4Address) {
            self.node = node
            self.trustDomain = trustDomain
            self.address = address
        }
    }

    public let config: Config
    public let directory: MeshDirectory
    public let identities: MeshIdentities
    public let tunnels: TunnelClient
    public let counters = TunnelCounters()
    public let denials: MeshDenials
    public let traffic = MeshTraffic()
    let enforcer: MeshEnforcer
    let server: TunnelServer
    let book: TunnelBook
    let client: APIClient
    let logger = Logger(label: "kemu.mesh")

    /// `client` follows the cluster (the proxy's); `nodeClient` asks for certificates as the
    /// node (`system:node:NAME`), which the mesh CA checks.
    public init(config: Config, client: APIClient, nodeClient: APIClient) throws {
        self.config = config
        self.client = client
        let loop = try MeshLoop(name: "kemu-mesh")
        let chores = KernelChores()
        directory = MeshDirectory(node: config.node, trustDomain: config.trustDomain, clusterWide: config.clusterWide)
        identities = MeshIdentities(client: nodeClient, node: config.node, seconds: config.certificateSeconds, trust: directory.trust)
        denials = MeshDenials(client: client, node: config.node)
        book = TunnelBook(trust: directory.trust)
        tunnels = TunnelClient(directory: directory, identities: identities, loop: loop, counters: counters, denials: denials,
                               traffic: traffic, book: book)
        server = TunnelServer(directory: directory, identities: identities, loop: loop, chores: chores, transparent: config.transparent,
                              counters: counters, denials: denials, traffic: traffic, book: book)
        enforcer = MeshEnforcer(directory: directory) { [tunnels] in tunnels.capturing.load(ordering: .relaxed) }
    }

    /// Runs until cancelled.
    public func run() async throws {
        try await listen()
        defer {
            enforcer.remove()
            server.stop()
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.directory.follow(self.client) }
            group.addTask { try await self.identities.maintain { self.directory.wantedIdentities } }
            group.addTask {
                // A new meshed pod's identity is asked for at once, before its first connection;
                // STRICT pods' addresses go to the node's nftables. A changed policy judges live
                // connections again; a revocation or a moved clock, open tunnels.
                var judged = (policies: 0, trust: 0)
                for await _ in self.directory.changes.stream {
                    self.identities.requestSoon()
                    self.enforcer.update()
                    let generation = self.directory.policyGeneration.load(ordering: .relaxed)
                    if generation != judged.policies {
                        judged.policies = generation
                        self.server.recheckLive()
                    }
                    let trust = self.directory.trust.generation.load(ordering: .relaxed)
                    if trust != judged.trust {
                        judged.trust = trust
                        let closed = self.book.judge()
                        if !closed.isEmpty { self.logger.warning("closed \(closed.count) tunnel(s): \(closed.prefix(3).joined(separator: "; "))") }
                    }
                }
            }
            group.addTask { try await self.denials.run() }
            group.addTask { await self.followSignals() }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    /// The lab's hands on the node's certificates (`kemu mesh rotate|expire`): SIGUSR1 renews
    /// them all now, SIGUSR2 drops them as if expired.
    func followSignals() async {
        let (stream, continuation) = AsyncStream<Int32>.makeStream()
        let sources = [SIGUSR1, SIGUSR2].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { continuation.yield(number) }
            source.resume()
            return source
        }
        defer { for source in sources { source.cancel() } }
        await withTaskCancellationHandler {
            for await number in stream {
                if number == SIGUSR1 {
                    logger.info("renewing every certificate now (SIGUSR1)")
                    identities.renewAll()
                } else {
                    logger.warning("every certificate dropped as if expired (SIGUSR2); asking again")
                    identities.expireAll()
                }
            }
        } onCancel: {
            continuation.finish()
        }
    }

    /// The tunnel listener; a node address not there yet (the fabric still coming up) is waited for.
    func listen() async throws {
        var pause = Duration.milliseconds(100)
        while !Task.isCancelled {
            do {
                return try server.listen(config.address)
            } catch {
                logger.warning("cannot accept tunnels on \(config.address):\(Mesh.tunnelPort) (\(error)); trying again")
                try await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(5))
            }
        }
    }

    /// What `kemu mesh status` shows of this node: certificates, tunnels, streams, policies.
    public func statusJSON() -> String {
        let v = counters.values.withLock { $0 }
        let policies = directory.policyCounts
        let certificates: [JSON] = identities.all.map { c in
            ["identity": .string(c.id.description), "notBefore": .string(Timestamp.format(c.notBefore)), "notAfter": .string(Timestamp.format(c.notAfter)),
             "serial": .string(c.serial)]
        }
        let status: JSON = [
            "node": .string(config.node), "certificates": .array(certificates), "openTunnels": .int(Int64(v.open)),
            "clockSkewSeconds": .int(Int64(directory.trust.skew.rounded())), "revokedSerials": .int(Int64(directory.trust.revokedCount)),
            "streams": ["opened": .int(Int64(v.opened)), "accepted": .int(Int64(v.accepted)), "denied": .int(Int64(denials.total)),
                        "unreachable": .int(Int64(v.unreachable))],
            "policies": ["authorization": .int(Int64(policies.authorization)), "peerAuthentication": .int(Int64(policies.peerAuthentication)),
                         "strictPods": .int(Int64(directory.strictAddresses.count))],
        ]
        return status.text()
    }

    /// The tunnels' counters, and each certificate held with its expiry.
    public func metricsText() -> String {
        var text = counters.text + denials.text + traffic.text
        text += "# HELP kemu_mesh_certificates_issued_total Certificates the mesh CA issued this proxy since it started.\n"
        text += "# TYPE kemu_mesh_certificates_issued_total counter\n"
        text += "kemu_mesh_certificates_issued_total \(identities.issued.load(ordering: .relaxed))\n"
        text += "# HELP kemu_mesh_certificate_expiry_timestamp_seconds When each SVID this node holds expires.\n"
        text += "# TYPE kemu_mesh_certificate_expiry_timestamp_seconds gauge\n"
        for credential in identities.all {
            text += "kemu_mesh_certificate_expiry_timestamp_seconds{identity=\"\(credential.id)\"} \(Int(credential.notAfter.timeIntervalSince1970))\n"
        }
        return text
    }
}
