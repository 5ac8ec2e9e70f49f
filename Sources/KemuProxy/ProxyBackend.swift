import KemuSystem
import Synchronization

/// Where the proxy's plans take effect (kube-proxy's Provider seam): pools of endpoints and the
/// frontends that feed them. The epoll + splice engine is one backend (`EngineBackend`); tests use
/// one that records the calls, so what `PlanApplier` does with a change is checked without sockets.
/// Calls between two `commit`s take effect together.
public protocol ProxyBackend: Sendable {
    /// Creates or updates a pool. Open connections keep going; endpoints that left are drained.
    func setPool(_ name: String, _ settings: PoolSettings, _ endpoints: [EndpointSpec])
    func removePool(_ name: String)
    /// Starts accepting on `address` for `frontend`; throws, naming the address, when it cannot be bound.
    func listen(_ address: FrontendAddress, _ frontend: Frontend) throws
    /// Sends an address's new connections (flows) to another pool, or with another source.
    func route(_ address: FrontendAddress, _ frontend: Frontend)
    /// Stops accepting on an address; connections already made go on.
    func unlisten(_ address: FrontendAddress)
    /// Makes everything said since the last commit take effect, as one batch.
    func commit()
}

/// The engine as a backend: listening sockets are opened here (SO_REUSEPORT, so a restarted proxy
/// can bind beside one still draining) and every call becomes an `EngineCommand` of one batch.
public final class EngineBackend: ProxyBackend {
    let engine: ProxyEngine
    private let batch = Mutex<[EngineCommand]>([])

    public init(engine: ProxyEngine) { self.engine = engine }

    public func setPool(_ name: String, _ settings: PoolSettings, _ endpoints: [EndpointSpec]) { add(.setPool(name, settings, endpoints)) }
    public func removePool(_ name: String) { add(.removePool(name)) }
    public func route(_ address: FrontendAddress, _ frontend: Frontend) { add(.route(address, frontend)) }
    public func unlisten(_ address: FrontendAddress) { add(.unlisten(address)) }

    public func listen(_ address: FrontendAddress, _ frontend: Frontend) throws {
        let fd = switch address.transport {
        case .tcp: try TCPSocket.listen(on: address.address, reusePort: true)
        case .udp: try DatagramSocket.listen(on: address.address)
        }
        add(.listen(fd, address, frontend))
    }

    public func commit() {
        let commands = batch.withLock { b -> [EngineCommand] in
            defer { b.removeAll() }
            return b
        }
        if !commands.isEmpty { engine.send(commands) }
    }

    private func add(_ command: EngineCommand) { batch.withLock { $0.append(command) } }
}
