import KemuAPI
import KemuIP
import KemuSystem

extension ServiceProxy {
    /// The mesh's capture listener: TPROXY on `Mesh.capturePort`, where the mesh's nftables send
    /// a meshed pod's connections to another meshed pod's own address (not a Service's), so that
    /// they travel in the tunnel and are judged like a Service's (`Frontend.passthrough`).
    func captureMeshedPods() {
        let address = SocketAddress(IPv4Address(0, 0, 0, 0), Mesh.capturePort)
        do {
            let fd = try TCPSocket.listen(on: address, freeBind: false, transparent: true)
            engine.send([.listen(fd, FrontendAddress(address), Frontend(pool: "", source: .client, passthrough: true))])
            engine.settings.mesh?.captureReady()
        } catch {
            logger.warning("meshed pods' connections to pods' own addresses stay in the clear: no capture listener (\(error))")
        }
    }
}
