import ArgumentParser
import KemuIP
import KemuSystem

/// A plain TCP relay on SwiftNIO's channel pipeline (the `Glue` handlers the API server's fabric
/// listener uses), for `make bench` to measure NIO's byte path against the proxy's epoll +
/// splice(2) engine in the same namespaces.
struct Relay: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay", abstract: "Relay TCP from one address to another through SwiftNIO (for benchmarks).",
        shouldDisplay: false)

    @Option(help: "IP:PORT to listen on.") var listen: String
    @Option(help: "IP:PORT to connect to.") var to: String

    func run() async throws {
        guard let from = Self.parse(listen) else { throw ValidationError("--listen: \(listen) is not IP:PORT") }
        guard let target = Self.parse(to) else { throw ValidationError("--to: \(to) is not IP:PORT") }
        let socket = try TCPSocket.listen(on: from, freeBind: false)
        try await FabricListener(socket: socket, target: { Int(target.port) }, targetHost: target.ip.description).run()
    }

    static func parse(_ text: String) -> SocketAddress? {
        let parts = text.split(separator: ":")
        guard parts.count == 2, let ip = IPv4Address(parts[0]), let port = UInt16(parts[1]) else { return nil }
        return SocketAddress(ip, port)
    }
}
