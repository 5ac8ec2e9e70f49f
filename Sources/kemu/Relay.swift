import ArgumentParser
import KemuCluster
import KemuSystem

/// A plain TCP relay on SwiftNIO's channel pipeline (the handlers the API server's fabric
/// listener uses), for `make bench` to measure NIO's byte path against the proxy's epoll +
/// splice(2) engine in the same namespaces.
struct Relay: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay", abstract: "Relay TCP from one address to another through SwiftNIO (for benchmarks).",
        shouldDisplay: false)

    @Option(help: "IP:PORT to listen on.") var listen: String
    @Option(help: "IP:PORT to connect to.") var to: String

    func run() async throws {
        guard let from = SocketAddress(listen) else { throw ValidationError("--listen: \(listen) is not IP:PORT") }
        guard let target = SocketAddress(to) else { throw ValidationError("--to: \(to) is not IP:PORT") }
        let socket = try TCPSocket.listen(on: from, freeBind: false)
        try await FabricListener(socket: socket, target: { Int(target.port) }, targetHost: target.ip.description).run()
    }
}
