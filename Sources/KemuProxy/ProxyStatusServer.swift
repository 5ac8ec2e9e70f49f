import KemuAPI
import Foundation
import KemuSystem
import NIOCore
import NIOHTTP1
import NIOPosix

/// kube-proxy's observable surface: `/healthz` and `/livez` on the health port (JSON with
/// lastUpdated and currentTime; 503 until the first successful sync, and when the last one is
/// older than the maximum sync interval plus a grace: syncs stopped, or keep failing), `/metrics` and `/endpoints` (when each Service's endpoints last changed
/// here, for experiments) on the metrics port. The ports are bound before the proxy
/// opens any listener: a second proxy for the same node fails there, before it could share
/// (SO_REUSEPORT) the first one's Service ports.
struct ProxyStatusServer {
    let proxy: ServiceProxy
    let channels: [any Channel]

    /// Binds the ports; throws, naming the port, when one is taken.
    init(proxy: ServiceProxy) async throws {
        self.proxy = proxy
        var channels: [any Channel] = []
        for (address, paths) in [(proxy.config.healthAddress, ["/healthz", "/livez"]), (proxy.config.metricsAddress, ["/metrics", "/endpoints"] + proxy.config.pages.keys.sorted())] {
            guard let address else { continue }
            let proxy = self.proxy
            do {
                let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
                    .childChannelInitializer { channel in
                        channel.pipeline.configureHTTPServerPipeline().flatMapThrowing {
                            try channel.pipeline.syncOperations.addHandler(StatusHandler { path, query in
                                await ProxyStatusServer.respond(proxy, path: paths.contains(path) ? path : "/404", query: query)
                            })
                        }
                    }
                    .bind(host: address.ip.description, port: Int(address.port)).get()
                channels.append(channel)
            } catch {
                for c in channels { c.close(promise: nil) }
                throw KemuError(.exists, "the proxy's \(paths.joined(separator: ", ")) port \(address) is taken (is another proxy serving this node?): \(error)")
            }
        }
        self.channels = channels
    }

    /// Serves until cancelled.
    func run() async throws {
        let open = channels
        defer { for c in open { c.close(promise: nil) } }
        try await withTaskCancellationHandler {
            while !Task.isCancelled { try await Task.sleep(for: .seconds(3600)) }
        } onCancel: {
            for c in open { c.close(promise: nil) }
        }
    }

    /// (status, content type, body) for a path.
    static func respond(_ proxy: ServiceProxy, path: String, query: String = "") async -> (HTTPResponseStatus, String, String) {
        switch path {
        case "/healthz", "/livez":
            let (healthy, last) = proxy.health()
            let body = "{\"lastUpdated\":\"\(last.map(Timestamp.formatNano) ?? "")\",\"currentTime\":\"\(Timestamp.formatNano(Date()))\"}"
            return (healthy ? .ok : .serviceUnavailable, "application/json", body)
        case "/metrics":
            let snapshot = await proxy.snapshot()
            return (.ok, "text/plain; version=0.0.4", proxy.metrics.render(snapshot) + (proxy.config.extraMetrics?() ?? ""))
        case "/endpoints":
            // ?service=NS/NAME: that Service's history only (a big cluster's whole history is megabytes).
            let service = query.split(separator: "&").first { $0.hasPrefix("service=") }.map { String($0.dropFirst("service=".count)) }
            return (.ok, "application/json", proxy.endpointHistory(service: service?.removingPercentEncoding ?? service).text())
        default:
            if let page = proxy.config.pages[path] { return (.ok, "application/json", page()) }
            return (.notFound, "text/plain", "404 page not found\n")
        }
    }
}

/// A small HTTP/1.1 responder: every request's path goes to `respond`.
final class StatusHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    typealias Respond = @Sendable (_ path: String, _ query: String) async -> (HTTPResponseStatus, String, String)
    let respond: Respond
    private var path = ""
    private var query = ""

    init(_ respond: @escaping Respond) { self.respond = respond }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case let .head(head):
            let parts = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
            path = String(parts.first ?? "")
            query = parts.count > 1 ? String(parts[1]) : ""
        case .body:
            break
        case .end:
            let (path, query) = (self.path, self.query)
            let respond = self.respond
            let loop = context.eventLoop
            let bound = NIOLoopBound((self, context), eventLoop: loop)
            Task {
                let (status, type, body) = await respond(path, query)
                loop.execute {
                    let (handler, context) = bound.value
                    handler.write(context, status, type, body)
                }
            }
        }
    }

    private func write(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ type: String, _ body: String) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: type)
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        var buffer = context.channel.allocator.buffer(capacity: body.utf8.count)
        buffer.writeString(body)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
}
