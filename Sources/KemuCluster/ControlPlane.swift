import Foundation
import Glibc
import KemuAPI
import KemuAPIServer
import KemuClient
import KemuControllers
import KemuIP
import KemuPKI
import KemuStore
import KemuSystem
import NIOSSL
import Synchronization

/// `kemu server` put together: the store, the API server with its TLS and authentication, the
/// fabric listener and every controller, run until SIGTERM.
public struct ControlPlane {
    public struct Settings: Sendable {
        public var dataDir: String
        public var port = 6443
        /// The addresses the serving certificate names and the server listens on (127.0.0.1 first);
        /// the fabric address is named in the certificate but served through the fabric listener.
        public var hosts: [IPv4Address] = [IPv4Address(127, 0, 0, 1)]
        public var insecure = false
        /// Also listen inside this network namespace, on this address and port (the cp host).
        public var fabric: (namespace: String, address: String, port: Int)?
        public var podLogs: String?
        /// The mesh's trust domain.
        public var clusterDomain = "cluster.local"
        public var podNetnsPrefix: String?
        public var stopWithParent = false
        public var ranges: ServiceRanges
        public var nodeGracePeriod: Double = 5
        public var podEvictionDelay: Double = 5
        public var eviction = EvictionPolicy()
        /// When the store flushes its log to disk: `batch` (default) or `always` (SyncPolicy).
        public var sync = SyncPolicy.batch.rawValue
        /// Seats per lane for requests in flight (false: unlimited, for benchmarks' comparison).
        public var priorityLanes = true

        public init(dataDir: String, ranges: ServiceRanges) {
            self.dataDir = dataDir
            self.ranges = ranges
        }
    }

    public let settings: Settings

    public init(_ settings: Settings) { self.settings = settings }

    /// The `--sync` values: `always` (fdatasync before each write is acknowledged) and `batch`.
    public static let syncPolicies = SyncPolicy.allCases.map(\.rawValue)

    public func run() async throws {
        let s = settings
        let store: Store
        do {
            guard let sync = SyncPolicy(rawValue: s.sync) else {
                throw KemuError(.invalidArgument, "--sync \(s.sync): one of \(Self.syncPolicies.joined(separator: ", "))")
            }
            store = try Store(directory: s.dataDir, sync: sync)
        } catch {
            throw KemuError(.invalidState, "cannot open the store in \(s.dataDir)", cause: error)
        }
        var api = try APIServer(store: store, ranges: s.ranges)
        api.podLogDirectory = s.podLogs
        if !s.priorityLanes { api.lanes = nil }
        do {
            api.audit = try AuditLog(path: "\(s.dataDir)/audit.log")
        } catch {
            throw KemuError(.invalidState, "cannot open the audit log in \(s.dataDir)", cause: error)
        }
        var tls: TLSConfiguration?
        var kubeconfig = Kubeconfig(server: "")
        var background: [@Sendable () async throws -> Void] = []
        if !s.insecure {
            let pki = try ClusterPKI.loadOrCreate(directory: "\(s.dataDir)/pki")
            let meshCA = try MeshCA.loadOrCreate(directory: "\(s.dataDir)/pki")
            let signer = MeshCertificateSigner(store: store, trustDomain: s.clusterDomain, stopFile: "\(s.dataDir)/\(Mesh.caStopFile)") { request, seconds, authorize in
                // The chain ends with the mesh CA, which proxies trust: they have it from the API,
                // which they already authenticate.
                let leaf = try meshCA.sign(requestPEM: request, seconds: seconds, authorize: authorize)
                return (leaf.hasSuffix("\n") ? leaf : leaf + "\n") + meshCA.certificatePEM
            }
            background.append { try await signer.run() }
            let serving = try pki.issueServing(
                dnsNames: ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"],
                addresses: (s.hosts + [s.ranges.serviceCIDR.host(1)].compactMap { $0 }).map(\.octets))
            tls = try Self.serverTLS(serving: serving, ca: pki.ca.certificatePEM)
            let serviceAccounts = ServiceAccountTokens(signer: pki.serviceAccounts)
            api.serviceAccountTokens = serviceAccounts
            api.authenticator = Authenticator(tokens: pki.tokens, serviceAccounts: (serviceAccounts, store))
            kubeconfig.certificateAuthorityPEM = pki.ca.certificatePEM
            kubeconfig.clientCertificatePEM = pki.admin.certificatePEM
            kubeconfig.clientKeyPEM = pki.admin.privateKeyPEM
        }
        // The fabric listener is bound before anything starts, so a missing namespace fails early.
        let boundPort = Mutex(0)
        if let fabric = s.fabric {
            let socket: Int32
            do {
                socket = try NetworkNamespace(fabric.namespace).listeningSocket(host: fabric.address, port: fabric.port)
            } catch {
                throw KemuError(.invalidState, "cannot listen on \(fabric.address):\(fabric.port) in namespace \(fabric.namespace)", cause: error)
            }
            background.append { try await FabricListener(socket: socket, target: { boundPort.withLock { $0 } }).run() }
        }
        if s.stopWithParent {
            // For test harnesses: a server whose parent died (a crashed test run) stops itself
            // instead of lingering.
            let parent = getppid()
            background.append {
                while getppid() == parent { try await Task.sleep(for: .milliseconds(500)) }
                kill(getpid(), SIGTERM)  // the usual graceful stop, which cancels this loop
                while true { try await Task.sleep(for: .seconds(60)) }
            }
        }
        background += Self.controllers(store, s, rootCA: kubeconfig.certificateAuthorityPEM)
        let (served, dataDir, scheme) = (api, s.dataDir, s.insecure ? "http" : "https")
        let listeners = s.hosts.map(\.description).filter { $0 != s.fabric?.address }
        let advertise = s.fabric.map { ($0.address, $0.port) }
        try await served.run(hosts: listeners, port: s.port, tls: tls, podNamespacePrefix: s.podNetnsPrefix,
                             background: background) { [kubeconfig] bound in
            boundPort.withLock { $0 = bound }
            var kubeconfig = kubeconfig
            kubeconfig.server = "\(scheme)://127.0.0.1:\(bound)"
            do {
                try served.publishEndpoints(address: advertise?.0 ?? listeners.last ?? "127.0.0.1", port: advertise?.1 ?? bound)
                try FileSystem.writeFile("\(dataDir)/kubeconfig", kubeconfig.render(), mode: 0o600)
                FileHandle.standardOutput.write(Data("kemu API server on \(kubeconfig.server) — kubectl --kubeconfig \(dataDir)/kubeconfig get namespaces\n".utf8))
            } catch {
                FileHandle.standardError.write(Data("kemu: cannot write \(dataDir)/kubeconfig: \(error)\n".utf8))
            }
        }
    }

    /// Every controller of the control plane, each a loop over the store's watches.
    static func controllers(_ store: Store, _ s: Settings, rootCA: String?) -> [@Sendable () async throws -> Void] {
        let serviceAccounts = ServiceAccountController(store: store, rootCA: rootCA)
        let endpointSlices = EndpointSliceController(store: store)
        let collector = GarbageCollector(store: store)
        let scheduler = Scheduler(store: store)
        let replicaSets = ReplicaSetController(store: store, resource: "replicasets.apps")
        let replicationControllers = ReplicaSetController(store: store, resource: "replicationcontrollers")
        let deployments = DeploymentController(store: store)
        let statefulSets = StatefulSetController(store: store)
        let jobs = JobController(store: store)
        let cronJobs = CronJobController(store: store)
        let daemonSets = DaemonSetController(store: store)
        let disruption = DisruptionController(store: store)
        let routes = RouteStatusController(store: store)
        let quotas = ResourceQuotaController(store: store)
        let nodeLifecycle = NodeLifecycleController(store: store, gracePeriod: s.nodeGracePeriod, evictionDelay: s.podEvictionDelay,
                                                    policy: s.eviction)
        return [{ try await endpointSlices.run() }, { try await collector.run() }, { try await scheduler.run() },
                { try await replicaSets.run() }, { try await replicationControllers.run() }, { try await deployments.run() },
                { try await statefulSets.run() }, { try await jobs.run() }, { try await cronJobs.run() }, { try await daemonSets.run() }, { try await disruption.run() }, { try await routes.run() }, { try await quotas.run() }, { try await nodeLifecycle.run() },
                { try await serviceAccounts.run() }]
    }

    /// The serving certificate, and client certificates checked against the cluster CA when a
    /// client presents one (optional, so bearer-token clients can connect too).
    static func serverTLS(serving: KeyPair, ca: String) throws -> TLSConfiguration {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(serving.certificatePEM.utf8)).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(serving.privateKeyPEM.utf8), format: .pem)))
        configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(ca.utf8)))
        configuration.certificateVerification = .optionalVerification
        // Closing a connection waits this long for the peer's close_notify; AsyncHTTPClient's idle
        // pooled connections never send one, which held SIGTERM up for NIOSSL's default 5 s.
        configuration.shutdownTimeout = .milliseconds(200)
        return configuration
    }
}
