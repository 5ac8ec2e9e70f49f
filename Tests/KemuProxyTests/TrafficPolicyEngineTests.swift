import Glibc
import KemuIP
@testable import KemuProxy
import KemuSystem
import Testing

/// Which endpoints a client reaches by where it comes from (traffic policies), over real
/// loopback sockets.
@Suite(.serialized) struct TrafficPolicyEngineTests {
    /// `externalTrafficPolicy: Local` on a node with no endpoint of its own: a client from
    /// outside the cluster is refused (reset, no answer), one from the pod network reaches the Service's
    /// endpoints elsewhere, as kube-proxy sends in-cluster traffic on with Cluster semantics.
    @Test func aLocalFrontendSendsInClusterClientsToEveryEndpoint() async throws {
        let backend = try EchoBackend("elsewhere")
        defer { backend.stop() }
        for (network, answered) in [("10.244.0.0/16", false), ("127.0.0.0/8", true)] {
            var settings = EngineSettings()
            settings.podNetwork = IPv4Network(network)
            let engine = try ProxyEngine(settings: settings)
            engine.start()
            // Its own loopback address: the client's (127.0.0.1) is then not the node dialling itself.
            let fd = try TCPSocket.listen(on: SocketAddress(IPv4Address(127, 0, 0, 2), 0), freeBind: false)
            let address = TCPSocket.localAddress(fd)!
            engine.send([.setPool("web@local", PoolSettings(), []), .setPool("web", PoolSettings(), [EndpointSpec(backend.address)]),
                         .listen(fd, FrontendAddress(address), Frontend(pool: "web@local", source: .client, inClusterPool: "web"))])
            let reply = exchange(address, Array("hi".utf8))
            await engine.stop()
            // Refused: the reset may be taken by the client's write, so no bytes is what shows.
            let text = String(decoding: reply.bytes, as: UTF8.self)
            #expect(answered ? text == "elsewhere\nhi" : reply.bytes.isEmpty, "\(network): \(reply)")
        }
    }
}
