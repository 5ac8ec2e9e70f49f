import Foundation
import Glibc
import HummingbirdWebSocket
import KemuAPI
import KemuSystem
import Logging
import NIOCore
import Synchronization

/// `kubectl port-forward` (to a pod, or to `svc/NAME`, which kubectl resolves to a pod itself):
/// a WebSocket upgrade with the subprotocol `SPDY/3.1+portforward.k8s.io`, whose binary
/// messages carry a SPDY/3.1 session. For each local connection kubectl opens an error stream
/// and a data stream (headers `streamType`, `port`, `requestID`); kemu connects to
/// `localhost:port` inside the pod's network namespace, as the container runtime does, and
/// relays bytes both ways in data frames. A port nothing listens on is reported on the error
/// stream in upstream's words.
struct PodPortForward: Sendable {
    static let tunnel = "SPDY/3.1+portforward.k8s.io"
    let server: APIServer
    let namespacePrefix: String
    static let logger = Logger(label: "kemu.portforward")

    func run(_ request: PortForwardRequest, inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async {
        let chunks = AsyncStream<[UInt8]>.makeStream()
        let writer = Task {
            for await chunk in chunks.stream { try? await outbound.write(.binary(ByteBuffer(bytes: chunk))) }
        }
        let session = ForwardSession(emit: { chunks.continuation.yield($0) })
        do {
            let pod = server.store.get("pods", namespace: request.namespace, name: request.pod)
            var reader = SPDY.FrameReader()
            let decoder = try SPDY.HeaderCodec(deflating: false), encoder = try SPDY.HeaderCodec(deflating: true)
            reading: for try await message in inbound.messages(maxSize: 1 << 25) {
                guard case .binary(let buffer) = message else { continue }
                reader.feed(buffer.readableBytesView)
                while let frame = try reader.next() {
                    guard let type = frame.type else {
                        session.received(frame)
                        continue
                    }
                    switch type {
                    case SPDY.synStream:
                        guard frame.payload.count >= 10 else { throw SPDY.ProtocolError("a SYN_STREAM too short") }
                        let headers = try SPDY.parseHeaderBlock(try decoder.run(Array(frame.payload[10...])))
                        let reply = SPDY.bigEndian(frame.streamID) + (try encoder.run(SPDY.headerBlock([])))
                        chunks.continuation.yield(SPDY.control(SPDY.synReply, reply))
                        open(frame.streamID, headers, pod: pod, request, session)
                    case SPDY.rstStream: session.reset(frame.streamID)
                    case SPDY.ping: chunks.continuation.yield(SPDY.control(SPDY.ping, frame.payload))
                    case SPDY.goAway: break reading
                    default: continue  // SETTINGS, WINDOW_UPDATE, HEADERS: nothing to do
                    }
                }
            }
        } catch {
            Self.logger.debug("port-forward to \(request.namespace)/\(request.pod) ended: \(error)")
        }
        session.closeAll()
        chunks.continuation.finish()
        await writer.value
        try? await outbound.close(.normalClosure, reason: nil)
    }

    /// A new stream: an error stream is kept for its data stream's failures; a data stream is
    /// a connection to the pod's port.
    func open(_ stream: UInt32, _ headers: [String: String], pod: JSON?, _ request: PortForwardRequest, _ session: ForwardSession) {
        let requestID = headers["requestid"] ?? ""
        if headers["streamtype"] == "error" {
            session.errorStream(stream, for: requestID)
            return
        }
        guard headers["streamtype"] == "data" else {
            session.emit(SPDY.control(SPDY.rstStream, SPDY.bigEndian(stream) + SPDY.bigEndian(1)))
            return
        }
        let portText = headers["port"] ?? ""
        guard let port = UInt16(portText), port > 0 else {
            return session.fail(data: stream, requestID: requestID, "invalid port \"\(portText)\": a port is a number from 1 to 65535")
        }
        guard session.connectionCount < ForwardSession.maxConnections else {
            return session.fail(data: stream, requestID: requestID,
                                "this port-forward session already has \(ForwardSession.maxConnections) connections open")
        }
        switch connect(pod, request, port: port) {
        case .success(let fd): session.relay(fd, data: stream, requestID: requestID)
        case .failure(let message): session.fail(data: stream, requestID: requestID, message)
        }
    }
}

/// The streams of one port-forward session and the pod connections behind them. The inbound
/// frames arrive on one task; each connection's reads run on a thread of their own.
final class ForwardSession: Sendable {
    /// A pod connection; every use of its descriptor is under one lock, so none reaches a number
    /// the kernel has handed out again after the close.
    final class Connection: Sendable {
        let fd: Int32
        private let closed = Mutex(false)

        init(fd: Int32) { self.fd = fd }

        /// Both directions are done: the descriptor goes, once.
        func close() {
            closed.withLock { done in
                if !done { Glibc.close(fd) }
                done = true
            }
        }

        func shutdown(_ how: Int32) {
            closed.withLock { done in if !done { _ = Glibc.shutdown(fd, how) } }
        }

        func write(_ bytes: [UInt8]) -> Bool {
            closed.withLock { done in
                guard !done else { return false }
                var offset = 0
                while offset < bytes.count {
                    let n = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                    if n <= 0 { return false }
                    offset += n
                }
                return true
            }
        }
    }

    /// Connections at once in one session (each holds a thread while it lasts).
    static let maxConnections = 256
    let emit: @Sendable ([UInt8]) -> Void
    private let state = Mutex<(errors: [String: UInt32], connections: [UInt32: Connection])>(([:], [:]))

    init(emit: @escaping @Sendable ([UInt8]) -> Void) { self.emit = emit }

    var connectionCount: Int { state.withLock { $0.connections.count } }

    func errorStream(_ stream: UInt32, for requestID: String) {
        state.withLock { $0.errors[requestID] = stream }
    }

    /// The data stream cannot be served: the reason on its error stream, both streams closed.
    func fail(data stream: UInt32, requestID: String, _ message: String) {
        let error = state.withLock { $0.errors.removeValue(forKey: requestID) }
        if let error { emit(SPDY.data(stream: error, Array(message.utf8), fin: true)) }
        emit(SPDY.data(stream: stream, [], fin: true))
    }

    /// A SPDY data stream's pod connection: what the pod sends in data frames, and at its end
    /// both streams finished.
    func relay(_ fd: Int32, data stream: UInt32, requestID: String) {
        let error = state.withLock { $0.errors.removeValue(forKey: requestID) }
        let emit = self.emit
        relay(fd, key: stream, wrap: { SPDY.data(stream: stream, $0) }) {
            emit(SPDY.data(stream: stream, [], fin: true))
            if let error { emit(SPDY.data(stream: error, [], fin: true)) }
        }
    }

    /// Reads the pod's side on a thread of its own, each chunk emitted as `wrap` frames it,
    /// `ended` once the pod (or the session) closes it.
    func relay(_ fd: Int32, key: UInt32, wrap: @escaping @Sendable ([UInt8]) -> [UInt8], ended: @escaping @Sendable () -> Void) {
        let connection = Connection(fd: fd)
        state.withLock { $0.connections[key] = connection }
        let emit = self.emit
        startThread(named: "kemu-port-fwd") { [weak self] in
            var buffer = [UInt8](repeating: 0, count: 32 << 10)
            while true {
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n <= 0 { break }
                emit(wrap(Array(buffer[..<n])))
            }
            ended()
            self?.forget(key)
            connection.close()
        }
    }

    /// Bytes from the client for the pod connection under `key`; `finished` ends the pod's input.
    func received(_ key: UInt32, _ bytes: [UInt8], finished: Bool = false) {
        guard let connection = state.withLock({ $0.connections[key] }) else { return }
        if !bytes.isEmpty, !connection.write(bytes) {
            connection.shutdown(Int32(SHUT_RDWR))
            return
        }
        if finished { connection.shutdown(Int32(SHUT_WR)) }
    }

    /// A data frame from the client: bytes for the pod; FIN ends the pod's input.
    func received(_ frame: SPDY.Frame) {
        received(frame.streamID, frame.payload, finished: frame.flags & SPDY.fin != 0)
    }

    func reset(_ stream: UInt32) {
        state.withLock { $0.connections[stream] }?.shutdown(Int32(SHUT_RDWR))
    }

    private func forget(_ stream: UInt32) {
        _ = state.withLock { $0.connections.removeValue(forKey: stream) }
    }

    /// The session ended: every connection is cut (its reader then ends and closes it).
    func closeAll() {
        for connection in state.withLock({ Array($0.connections.values) }) { connection.shutdown(Int32(SHUT_RDWR)) }
    }
}

/// `/api/v1/namespaces/NS/pods/NAME/portforward?ports=8080,9000` (the ports are in the query
/// for the channel protocol; SPDY streams name theirs in their headers).
struct PortForwardRequest: Sendable {
    var namespace: String
    var pod: String
    /// nil when the query names a port that is not one (1-65535).
    var ports: [UInt16]?

    init?(_ target: String) {
        let parts = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = (parts.first ?? "").split(separator: "/").map(String.init)
        guard path.count == 7, path[0] == "api", path[1] == "v1", path[2] == "namespaces", path[4] == "pods", path[6] == "portforward" else {
            return nil
        }
        namespace = path[3]
        pod = path[5]
        var ports: [UInt16]? = []
        for pair in (parts.count > 1 ? parts[1] : "").split(separator: "&") where pair.hasPrefix("ports=") {
            let value = String(pair.dropFirst(6))
            for text in (value.removingPercentEncoding ?? value).split(separator: ",", omittingEmptySubsequences: false) {
                guard let port = UInt16(text), port > 0 else { ports = nil; break }
                ports?.append(port)
            }
        }
        self.ports = ports
    }
}

extension PodPortForward {
    static let channels = "v4.channel.k8s.io"

    /// The WebSocket channel protocol (the python client's): port i's data on channel 2i, its
    /// errors on 2i + 1, each channel's first message the port (2 bytes, little-endian); one
    /// connection per port, opened at once. The session ends when every connection has.
    func runChannels(_ request: PortForwardRequest, inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async {
        let chunks = AsyncStream<[UInt8]>.makeStream()
        let writer = Task {
            for await chunk in chunks.stream { try? await outbound.write(.binary(ByteBuffer(bytes: chunk))) }
        }
        let session = ForwardSession(emit: { chunks.continuation.yield($0) })
        let ports = request.ports ?? []
        for (i, port) in ports.enumerated() {
            for channel in [UInt8(2 * i), UInt8(2 * i + 1)] { chunks.continuation.yield([channel, UInt8(port & 0xff), UInt8(port >> 8)]) }
        }
        let open = Mutex(ports.count)
        let pod = server.store.get("pods", namespace: request.namespace, name: request.pod)
        for (i, port) in ports.enumerated() {
            let data = UInt8(2 * i)
            let ended: @Sendable () -> Void = {
                if open.withLock({ $0 -= 1; return $0 }) == 0 { chunks.continuation.finish() }
            }
            switch connect(pod, request, port: port) {
            case .success(let fd):
                session.relay(fd, key: UInt32(data), wrap: { [data] + $0 }, ended: ended)
            case .failure(let message):
                chunks.continuation.yield([data + 1] + Array(message.utf8))
                ended()
            }
        }
        let reading = Task {
            for try await message in inbound.messages(maxSize: 1 << 24) {
                guard let (channel, bytes) = PodExec.channelMessage(message), channel % 2 == 0 else { continue }
                session.received(UInt32(channel), bytes)
            }
        }
        await writer.value
        reading.cancel()
        session.closeAll()
        try? await outbound.close(.normalClosure, reason: nil)
    }

    enum Connected { case success(Int32), failure(String) }

    /// A connection to the pod's localhost port, or upstream's words for why there is none.
    func connect(_ pod: JSON?, _ request: PortForwardRequest, port: UInt16) -> Connected {
        guard let pod else { return .failure("pods \"\(request.pod)\" not found") }
        let sandbox = namespacePrefix + PodNames.sandbox(pod)
        let namespace = NetworkNamespace(sandbox)
        guard namespace.exists else {
            return .failure("unable to do port forwarding: pod \(request.pod) has no running sandbox (phase \(pod[path: "status.phase"]?.string ?? "Pending"))")
        }
        do {
            return .success(try namespace.connectedSocket(host: "127.0.0.1", port: Int(port)))
        } catch {
            let reason = (error as? SystemError).map { String(cString: strerror($0.errno)).lowercased() } ?? "\(error)"
            return .failure("error forwarding port \(port) to pod \(pod.uid), uid : failed to connect to localhost:\(port) inside namespace \"\(sandbox)\", IPv4: dial tcp4 127.0.0.1:\(port): connect: \(reason)")
        }
    }
}
