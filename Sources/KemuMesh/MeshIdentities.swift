import Foundation
import KemuAPI
import KemuClient
import KemuPKI
import Logging
import NIOSSL
import Synchronization

/// One identity's X.509 SVID, its key, and the TLS contexts made from them.
public struct MeshCredential: Sendable {
    public let id: SPIFFEID
    public let notBefore: Date
    public let notAfter: Date
    /// Lowercase hex, as `kemu.dev/revoked-certificates` names it.
    public let serial: String
    let client: NIOSSLContext
    let server: NIOSSLContext

    /// Half its life gone: time for the next one (Istio's rotation point).
    func due(_ now: Date) -> Bool { now >= notBefore.addingTimeInterval(notAfter.timeIntervalSince(notBefore) / 2) }
}

/// The SVIDs a node's proxy holds: its own identity and the ServiceAccounts of the meshed pods
/// bound to its node, each asked of the mesh CA through the API (a CertificateSigningRequest
/// with signerName kemu.dev/mesh, as the node), rotated at half life, dropped when no pod needs
/// it. A request the CA refuses is retried with a growing pause (1 s doubling to 30 s). Time is
/// the node's own (`MeshTrust.now`, skewed by the lab); a revoked certificate is dropped at once.
public final class MeshIdentities: Sendable {
    static let resource = APIResources.find(group: "certificates.k8s.io", version: "v1", resource: "certificatesigningrequests")
    let client: APIClient
    let node: String
    /// What each certificate is asked for (the CA caps it at 24 h, floors it at 10 min).
    let seconds: Int
    let trust: MeshTrust
    let logger = Logger(label: "kemu.mesh.identities")
    let state = Mutex<(credentials: [SPIFFEID: MeshCredential], failures: [SPIFFEID: (count: Int, retryAt: Date)], inFlight: Set<SPIFFEID>,
                       renew: Set<SPIFFEID>)>(([:], [:], [], []))
    /// Certificates obtained since the proxy started.
    let issued = Atomic<Int>(0)
    let wake = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))

    public init(client: APIClient, node: String, seconds: Int = Mesh.defaultCertificateSeconds, trust: MeshTrust? = nil) {
        self.trust = trust ?? MeshTrust(node: node)
        self.client = client
        self.node = node
        self.seconds = seconds
    }

    public func credential(_ id: SPIFFEID) -> MeshCredential? { state.withLock { $0.credentials[id] } }

    public var all: [MeshCredential] { state.withLock { $0.credentials.values.sorted { $0.id < $1.id } } }

    /// Asks for an identity now rather than at the next round (a dial found none).
    public func requestSoon() { wake.continuation.yield() }

    /// Rotation on demand (the lab's `rotate-certs`): every certificate is asked for again now;
    /// each old one serves until its successor comes.
    public func renewAll() {
        state.withLock { $0.renew = Set($0.credentials.keys) }
        requestSoon()
    }

    /// The lab's `expire-certs`: every certificate is dropped at once, as if it had expired, and
    /// asked for again; until one comes, that identity's new connections are refused.
    public func expireAll() {
        state.withLock { s in
            s.credentials.removeAll()
            s.failures.removeAll()
        }
        requestSoon()
    }

    /// Keeps the credentials of `wanted()` current until cancelled: a round each second or when
    /// woken, each identity due asked for concurrently.
    func maintain(_ wanted: @escaping @Sendable () -> Set<SPIFFEID>) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                while !Task.isCancelled {
                    try await Task.sleep(for: .seconds(1))
                    self.wake.continuation.yield()
                }
            }
            group.addTask {
                for await _ in self.wake.stream {
                    let want = wanted()
                    let (now, real) = (self.trust.now, Date())
                    let due: [SPIFFEID] = self.state.withLock { s in
                        for (id, credential) in s.credentials where !want.contains(id) || self.trust.isRevoked(credential.serial) {
                            if want.contains(id) { self.logger.warning("\(id): certificate \(credential.serial) revoked; asking for another") }
                            s.credentials[id] = nil
                        }
                        let due = want.filter { id in
                            !s.inFlight.contains(id) && (s.credentials[id].map { $0.due(now) || $0.notAfter <= now || s.renew.contains(id) } ?? true)
                                && (s.failures[id].map { $0.retryAt <= real } ?? true)
                        }
                        s.inFlight.formUnion(due)
                        return Array(due)
                    }
                    for id in due { Task { await self.issue(id) } }
                }
            }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    func issue(_ id: SPIFFEID) async {
        defer {
            state.withLock { _ = $0.inFlight.remove(id) }
        }
        do {
            let credential = try await request(id)
            // Already due by this node's clock (skewed ahead past its half life): kept, but the
            // next request waits as after a failure, not in a loop.
            let early = credential.due(trust.now)
            state.withLock { s in
                s.credentials[id] = credential
                s.renew.remove(id)
                if !early { s.failures[id] = nil }
            }
            issued.add(1, ordering: .relaxed)
            if early, Self.worthSaying(backOff(id)) {
                logger.warning("\(id): the new certificate (valid \(Timestamp.format(credential.notBefore)) to \(Timestamp.format(credential.notAfter))) is due for renewal already by this node's clock (\(Timestamp.format(trust.now)))")
            }
            logger.debug("\(id): certificate valid until \(credential.notAfter)")
        } catch {
            let count = backOff(id)
            if Self.worthSaying(count) { logger.warning("\(id): no certificate (\(count) tries): \(error)") }
        }
    }

    /// One more failure in a row for `id`: its next request waits 1 s, doubling to 30 s.
    /// Returns the count.
    func backOff(_ id: SPIFFEID) -> Int {
        state.withLock { s in
            let count = (s.failures[id]?.count ?? 0) + 1
            s.failures[id] = (count, Date().addingTimeInterval(min(pow(2, Double(count - 1)), 30)))
            return count
        }
    }

    /// The first of a run, then every tenth.
    static func worthSaying(_ count: Int) -> Bool { count == 1 || count % 10 == 0 }

    /// One request through the API: create, wait for the CA's answer, delete.
    func request(_ id: SPIFFEID) async throws -> MeshCredential {
        guard let resource = Self.resource else { throw MeshError("the API serves no certificatesigningrequests") }
        let (requestPEM, keyPEM) = try SVID.request(for: id)
        let object: JSON = [
            "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": ["generateName": .string("mesh-\(node)-"), "labels": ["kemu.dev/node": .string(node)]],
            "spec": ["request": .string(Data(requestPEM.utf8).base64EncodedString()), "signerName": .string(Mesh.signerName),
                     "expirationSeconds": .int(Int64(seconds)), "usages": ["digital signature", "key encipherment", "server auth", "client auth"]],
        ]
        let created = try await client.create(resource, object)
        defer { Task { [client] in _ = try? await client.delete(resource, name: created.name) } }
        let deadline = ContinuousClock.now + .seconds(10)
        var pause = Duration.milliseconds(5)
        while ContinuousClock.now < deadline {
            let current = try await client.get(resource, name: created.name)
            if let condition = (current[path: "status.conditions"]?.array ?? []).first(where: { ["Denied", "Failed"].contains($0["type"]?.string) }) {
                throw MeshError("the mesh CA refused \(id): \(condition["message"]?.string ?? condition["type"]?.string ?? "")")
            }
            if let encoded = current[path: "status.certificate"]?.string, let data = Data(base64Encoded: encoded), let chain = String(data: data, encoding: .utf8) {
                return try Self.credential(id, chain: chain, keyPEM: keyPEM)
            }
            try await Task.sleep(for: pause)
            pause = min(pause * 2, .milliseconds(200))
        }
        throw MeshError("the mesh CA did not answer within 10 s")
    }

    /// The credential from the CA's chain (the leaf first, the CA last) and the key.
    static func credential(_ id: SPIFFEID, chain: String, keyPEM: String) throws -> MeshCredential {
        let certificates = try NIOSSLCertificate.fromPEMBytes(Array(chain.utf8))
        guard let leaf = certificates.first, let authority = certificates.last, certificates.count >= 2,
              let read = SVID.identity(certificateDER: try leaf.toDERBytes()), read.id == id else {
            throw MeshError("the mesh CA's answer is not a certificate for \(id) followed by the CA")
        }
        let key = try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem)
        return MeshCredential(id: id, notBefore: read.notBefore, notAfter: read.notAfter, serial: read.serial,
                              client: try NIOSSLContext(configuration: TunnelTLS.client(leaf: leaf, key: key, authority: authority)),
                              server: try NIOSSLContext(configuration: TunnelTLS.server(leaf: leaf, key: key, authority: authority)))
    }
}

public struct MeshError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// TLS 1.3 with both sides' SVIDs, as HBONE: each side proves its identity with a certificate
/// the mesh CA signed, and offers h2.
enum TunnelTLS {
    static func client(leaf: NIOSSLCertificate, key: NIOSSLPrivateKey, authority: NIOSSLCertificate) -> TLSConfiguration {
        var c = TLSConfiguration.makeClientConfiguration()
        c.certificateChain = [.certificate(leaf)]
        c.privateKey = .privateKey(key)
        return common(c, authority)
    }

    static func server(leaf: NIOSSLCertificate, key: NIOSSLPrivateKey, authority: NIOSSLCertificate) -> TLSConfiguration {
        common(TLSConfiguration.makeServerConfiguration(certificateChain: [.certificate(leaf)], privateKey: .privateKey(key)), authority)
    }

    static func common(_ configuration: TLSConfiguration, _ authority: NIOSSLCertificate) -> TLSConfiguration {
        var c = configuration
        c.trustRoots = .certificates([authority])
        // Identities are SPIFFE IDs, not host names: the tunnel checks the peer's itself.
        c.certificateVerification = .noHostnameVerification
        c.minimumTLSVersion = .tlsv13
        c.applicationProtocols = ["h2"]
        c.shutdownTimeout = .milliseconds(200)
        return c
    }
}
