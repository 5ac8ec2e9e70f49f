import Foundation
import KemuSystem
import Hummingbird
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// `kemu/echo`: the sample workload. An HTTP server that says who answered (pod, namespace, pod
/// IP, node, from the downward-API environment) and what it was asked, and a raw TCP port that
/// echoes bytes back. Settings make it slow to become ready or make it fail, to exercise probes.
public struct EchoServer: Sendable {
    public struct Settings: Sendable {
        public var port = 8080
        /// Raw TCP echo port (0: none).
        public var tcpPort = 9000
        public var address = "0.0.0.0"
        /// Seconds before /readyz answers 200.
        public var readyAfter: Double = 0
        /// Seconds after which /healthz answers 500 (0: never).
        public var failAfter: Double = 0
        /// Seconds after which the process exits with status 1 (0: never).
        public var exitAfter: Double = 0
        /// A file to append a line to at every start; GET /journal shows it.
        public var journal: String?

        public init() {}
    }

    public let settings: Settings

    public init(_ settings: Settings) { self.settings = settings }

    public func run() async throws {
        let (address, port, tcpPort, exitAfter, journal) = (settings.address, settings.port, settings.tcpPort, settings.exitAfter, settings.journal)
        let started = ContinuousClock.now
        let identity = EchoIdentity(ProcessInfo.processInfo.environment)
        let (readyAfter, failAfter) = (settings.readyAfter, settings.failAfter)
        let router = Router(context: EchoContext.self)
        if let journal {
            let line = "\(identity.pod) started \(ISO8601DateFormatter().string(from: Date()))\n"
            guard let handle = FileHandle(forWritingAtPath: journal) ?? {
                FileManager.default.createFile(atPath: journal, contents: nil) ? FileHandle(forWritingAtPath: journal) : nil
            }() else {
                throw KemuError(.invalidArgument, "--journal \(journal): cannot open it for writing in \(FileManager.default.currentDirectoryPath)")
            }
            handle.seekToEndOfFile()
            handle.write(Data(line.utf8))
            try handle.close()
            router.get("/journal") { _, _ -> Response in
                Self.text(.ok, (try? String(contentsOfFile: journal, encoding: .utf8)) ?? "")
            }
        }
        router.get("/healthz") { _, _ -> Response in
            let failing = failAfter > 0 && started.duration(to: .now) >= .seconds(failAfter)
            return Self.text(failing ? .internalServerError : .ok, failing ? "failing (--fail-after)\n" : "ok\n")
        }
        router.get("/readyz") { _, _ -> Response in
            let ready = started.duration(to: .now) >= .seconds(readyAfter)
            return Self.text(ready ? .ok : .serviceUnavailable, ready ? "ready\n" : "not ready yet (--ready-after)\n")
        }
        // "**" needs at least one path component: "/" is routed on its own.
        for path in ["/", "**"] {
            router.on(RouterPath(path), method: .get) { request, context in identity.answer(request, context) }
            router.on(RouterPath(path), method: .post) { request, context in identity.answer(request, context) }
        }
        var logger = Logger(label: "kemu.echo")
        logger.logLevel = .warning
        let app = Application(router: router, configuration: .init(address: .hostname(address, port: port), serverName: "kemu-echo"),
                              logger: logger)
        var services: [any Service] = [app]
        if tcpPort != 0 { services.append(TCPEcho(host: address, port: tcpPort)) }
        if exitAfter > 0 {
            let seconds = exitAfter
            services.append(Countdown(seconds: seconds))
        }
        try await ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)).run()
    }

    static func text(_ status: HTTPResponse.Status, _ body: String) -> Response {
        Response(status: status, headers: [.contentType: "text/plain; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}

/// Who this echo server is, from the environment the node agent gives every container.
struct EchoIdentity: Sendable {
    var pod, namespace, podIP, node: String

    init(_ environment: [String: String]) {
        pod = environment["POD_NAME"] ?? ""
        namespace = environment["POD_NAMESPACE"] ?? ""
        podIP = environment["POD_IP"] ?? ""
        node = environment["NODE_NAME"] ?? ""
    }

    func answer(_ request: Request, _ context: EchoContext) -> Response {
        let client = context.remoteAddress.map { "\($0.ipAddress ?? ""):\($0.port ?? 0)" } ?? ""
        let wantsText = request.uri.queryParameters["format"] == "text" || (request.headers[.accept] ?? "").hasPrefix("text/plain")
        if wantsText {
            let text = "pod=\(pod) namespace=\(namespace) ip=\(podIP) node=\(node) client=\(client) \(request.method) \(request.uri)\n"
            return EchoServer.text(.ok, text)
        }
        let headers = request.headers.map { "\"\(Self.escape($0.name.canonicalName))\":\"\(Self.escape($0.value))\"" }.joined(separator: ",")
        let fields: [(String, String)] = [("pod", pod), ("namespace", namespace), ("podIP", podIP), ("node", node),
                                         ("client", client), ("method", request.method.rawValue), ("path", request.uri.description)]
        let body = "{" + fields.map { "\"\($0.0)\":\"\(Self.escape($0.1))\"" }.joined(separator: ",") + ",\"headers\":{\(headers)}}\n"
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    static func escape(_ s: String) -> String {
        var out = ""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}

/// The basic context plus the client's address, which the answer reports.
struct EchoContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let remoteAddress: NIOCore.SocketAddress?

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }
}

/// Echoes every byte back on each accepted connection.
struct TCPEcho: Service {
    let host: String
    let port: Int

    func run() async throws {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(EchoHandler()) }
            }
            .bind(host: host, port: port).get()
        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
    }
}

final class EchoHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// `--exit-after`: ends the process with status 1, as a crashing workload would.
struct Countdown: Service {
    let seconds: Double

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            try await Task.sleep(for: .seconds(seconds))
            FileHandle.standardError.write(Data("kemu echo: exiting after \(seconds) s (--exit-after)\n".utf8))
            exit(1)
        }
    }
}
