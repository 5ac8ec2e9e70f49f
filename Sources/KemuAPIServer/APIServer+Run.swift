import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import HummingbirdWebSocket
import KemuStore
import KemuSystem
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle

extension APIServer {
    /// Serves on every address in `hosts` (one listener each, all on `port`) until the process is
    /// told to stop: https when `tls` is given, plain http otherwise. SIGTERM/SIGINT drain
    /// through swift-service-lifecycle in reverse start order: open watches end first, then the
    /// listeners finish their requests. `onRunning` runs once, after the first listener is up,
    /// with the port it bound: port 0 picks a free one, and is allowed with one address only.
    /// `background` loops (controllers) run beside the server and are cancelled first on shutdown.
    /// With `podNamespacePrefix` (a cluster's `kemu-<cluster>-p-`), pods/exec upgrades to a
    /// WebSocket and runs the command in the pod's sandbox.
    public func run(hosts: [String], port: Int, tls: TLSConfiguration? = nil, podNamespacePrefix: String? = nil,
                    background: [@Sendable () async throws -> Void] = [],
                    onRunning: @escaping @Sendable (Int) async -> Void) async throws {
        precondition(!hosts.isEmpty && (port != 0 || hosts.count == 1), "APIServer.run: port 0 needs exactly one address")
        var base: HTTPServerBuilder = .http1()
        if let podNamespacePrefix {
            let exec = PodExec(server: self, namespacePrefix: podNamespacePrefix)
            // Frames up to 1 MiB: kubectl writes 32 KiB at a time (cp's tar through exec, a
            // port-forward's SPDY data frames), twice the library's default limit.
            base = .http1WebSocketUpgrade(configuration: .init(ws: .init(maxFrameSize: 1 << 20))) { request, channel, _ in
                await exec.shouldUpgrade(request, channel)
            }
        }
        let server: HTTPServerBuilder = try tls.map { try .tls(base, tlsConfiguration: $0) } ?? base
        let logger = Logger(label: "kemu.apiserver")
        let listeners: [any Service] = hosts.enumerated().map { index, host in
            Application(
                responder: self, server: server,
                configuration: .init(address: .hostname(host, port: port), serverName: "kemu"),
                onServerRunning: { channel in
                    if index == 0 { await onRunning(channel.localAddress?.port ?? port) }
                },
                logger: logger)
        }
        let group = ServiceGroup(configuration: .init(
            services: listeners + [WatchCloser(watches: watches)] + background.map(BackgroundLoop.init),
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await group.run()
    }
}

/// A controller loop as a lifecycle service: cancelled when the server starts shutting down. The
/// loops run on a thread of their own, so the cooperative pool is the requests'.
struct BackgroundLoop: Service {
    static let controllers = DedicatedExecutor(name: "kemu-ctrl")
    let body: @Sendable () async throws -> Void

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            try await withTaskExecutorPreference(Self.controllers) {
                do { try await body() } catch is CancellationError {}
            }
        }
    }
}
