import KemuSystem
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// kube-proxy's per-Service health checks: for each LoadBalancer Service with
/// `externalTrafficPolicy: Local`, its `healthCheckNodePort` answers on every node
/// `{"service":{"namespace","name"},"localEndpoints":N,"serviceProxyHealthy":true}`, 200 while the
/// node has a ready endpoint of it and 503 when it has none (so a cloud drains the node).
final class HealthCheckServer: Sendable {
    struct Entry: Equatable, Sendable {
        var namespace: String
        var name: String
        var localEndpoints: Int
    }

    let logger: Logger
    private let entries = Mutex<[UInt16: Entry]>([:])
    private let channels = Mutex<[UInt16: any Channel]>([:])

    init(logger: Logger) { self.logger = logger }

    /// Serves exactly `desired`: new ports are bound, gone ones closed, counts updated in place.
    func update(_ desired: [UInt16: Entry]) {
        let (added, removed) = entries.withLock { current -> ([UInt16], [UInt16]) in
            defer { current = desired }
            return (desired.keys.filter { current[$0] == nil }, current.keys.filter { desired[$0] == nil })
        }
        for port in removed { channels.withLock { $0.removeValue(forKey: port) }?.close(promise: nil) }
        for port in added {
            let bind = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { [self] channel in
                    channel.pipeline.configureHTTPServerPipeline().flatMapThrowing { [self] in
                        try channel.pipeline.syncOperations.addHandler(StatusHandler { [self] _, _ in
                            guard let e = self.entries.withLock({ $0[port] }) else { return (.notFound, "text/plain", "404 page not found\n") }
                            return Self.respond(e)
                        })
                    }
                }
                .bind(host: "0.0.0.0", port: Int(port))
            bind.whenComplete { [self] result in
                switch result {
                case let .success(channel):
                    // Still wanted? (the Service may have gone while binding)
                    if self.entries.withLock({ $0[port] }) == nil { channel.close(promise: nil); return }
                    self.channels.withLock { $0[port] = channel }
                case let .failure(error):
                    self.logger.error("cannot serve the health check on port \(port): \(error)")
                }
            }
        }
    }

    static func respond(_ e: Entry) -> (HTTPResponseStatus, String, String) {
        let body = "{\"service\":{\"namespace\":\"\(e.namespace)\",\"name\":\"\(e.name)\"},\"localEndpoints\":\(e.localEndpoints),\"serviceProxyHealthy\":true}"
        return (e.localEndpoints > 0 ? .ok : .serviceUnavailable, "application/json", body)
    }

    func closeAll() {
        for channel in channels.withLock({ c in defer { c.removeAll() }; return Array(c.values) }) { channel.close(promise: nil) }
    }
}
