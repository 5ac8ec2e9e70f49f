import Foundation
import KemuAPI
import KemuClient
import KemuIP
import KemuSystem
import Logging
import Synchronization

/// The cluster DNS responder of one node: listens on the cluster DNS IP (UDP port 53) in the
/// node's namespace, where the node's pods send their queries (their resolv.conf), and answers
/// from its own watch of Services and EndpointSlices. Authoritative for the cluster domain and
/// reverse names; REFUSED for every other zone (there is no upstream to forward to).
public final class DNSServer: Sendable {
    public struct Config: Sendable {
        public var address: SocketAddress
        public var domain: String
        public var ttl: UInt32

        public init(address: SocketAddress, domain: String = "cluster.local", ttl: UInt32 = 5) {
            self.address = address
            self.domain = domain
            self.ttl = ttl
        }
    }

    public let config: Config
    let client: APIClient
    let zone: Mutex<DNSZone>
    /// What the names are made from: each Service and its slices in compact form (the same
    /// watch-fed index the node proxy keeps, with the DNS's own compact forms).
    let objects = Mutex(ServiceSliceIndex(service: { ServiceNames($0) }, slice: { SliceNames($0) }))
    let logger = Logger(label: "kemu.dns")
    /// Classic DNS over UDP without EDNS: answers beyond this are cut and flagged TC (the client
    /// then asks over TCP, where they are not).
    static let udpLimit = 512

    public init(config: Config, client: APIClient) {
        self.config = config
        self.client = client
        zone = Mutex(DNSZone(domain: config.domain, ttl: config.ttl))
    }

    /// Runs until cancelled.
    public func run() async throws {
        let socket: Int32
        do {
            socket = try UDPSocket.bind(config.address)
        } catch {
            throw KemuError(.exists, "cluster DNS cannot listen on udp \(config.address): \(error) (is another DNS responder serving this node?)")
        }
        startThread(named: "kemu-dns") { [self] in serve(socket) }
        defer { UDPSocket.close(socket) }
        let tcp: any TCPListener
        do {
            tcp = try await serveTCP()
        } catch {
            throw KemuError(.exists, "cluster DNS cannot listen on tcp \(config.address): \(error)")
        }
        defer { tcp.close(promise: nil) }
        // Revisions only: `objects` keeps the compact forms the names are made from.
        let services = Informer(client, APIResources.services, cache: .revisions)
        // Only a headless Service's slices make records (upstream labels them so): a ClusterIP
        // Service's endpoints churning under a rollout cost the DNS nothing.
        let slices = Informer(client, APIResources.endpointSlices, labels: "service.kubernetes.io/headless", cache: .revisions)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await services.run { self.serviceEvent($0) } }
            group.addTask { try await slices.run { self.sliceEvent($0) } }
            try await group.next()
            group.cancelAll()
        }
    }

    func serviceEvent(_ event: InformerEvent) {
        update { $0.apply(service: event) }
    }

    func sliceEvent(_ event: InformerEvent) {
        update { $0.apply(slice: event) }
    }

    /// Applies an event to the compact sources, then re-derives the names of the Services it changed.
    private func update(_ change: (inout ServiceSliceIndex<ServiceNames, SliceNames>) -> [ServiceKey]) {
        let changed = objects.withLock { o in
            change(&o).map { ($0.description, o.services[$0], o.slices(of: $0)) }
        }
        guard !changed.isEmpty else { return }
        zone.withLock { zone in
            for (key, service, slices) in changed { zone.set(service: key, names: service, slices: slices) }
        }
    }

    /// The responder's loop, on its own thread: one datagram in, one out.
    private func serve(_ socket: Int32) {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while let (n, peer) = UDPSocket.receive(socket, into: &buffer) {
            guard let reply = respond(to: Array(buffer[0..<n])) else { continue }
            UDPSocket.send(socket, reply, to: peer)
        }
    }

    /// The reply datagram for a query datagram; nil when there is nothing to answer (no header,
    /// or a response sent to us).
    func respond(to datagram: [UInt8], limit: Int = DNSServer.udpLimit) -> [UInt8]? {
        let query: DNSMessage
        do {
            query = try DNSMessage.parse(datagram)
        } catch .malformed(let id) {
            return DNSMessage(id: id, flags: 0x8000 | UInt16(DNSMessage.ResponseCode.formatError.rawValue), questions: []).bytes()
        } catch {
            return nil
        }
        if query.isResponse { return nil }
        var reply = zone.withLock { $0.answer(query) }
        var bytes = reply.bytes()
        while bytes.count > limit && !reply.answers.isEmpty {
            reply.answers.removeLast(max(1, reply.answers.count / 4))
            reply.flags |= 0x0200  // TC: the client may ask again over TCP
            bytes = reply.bytes()
        }
        return bytes
    }
}
