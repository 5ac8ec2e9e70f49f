import NIOCore
import NIOHPACK

/// The peer's frames, as the connection and its streams take them.
extension TunnelStreams {
    func handle(_ frame: TunnelFrame) throws {
        switch frame {
        case let .data(id, bytes, end, flowed):
            try received(flowed)
            guard let stream = streams[id] else {
                if idle(id) { throw TunnelWireError(code: .protocolError, reason: "DATA on stream \(id), never opened") }
                return  // a stream ended here: its late bytes are dropped
            }
            stream.receiveWindow -= flowed
            guard !stream.inputEnded, stream.receiveWindow >= 0 else {
                return reset(id, stream.inputEnded ? .streamClosed : .flowControl)
            }
            if stream.receive(bytes, end: end), !stream.flushDue {
                stream.flushDue = true
                delivered.append(stream)
            }
            if end { closeIfDone(stream) } else { stream.inboundWindow() }
        case let .headers(id, headers, end):
            try opened(id, headers, end: end)
        case let .reset(id, _):
            if idle(id) { throw TunnelWireError(code: .protocolError, reason: "RST_STREAM on stream \(id), never opened") }
            if let stream = streams[id] { finish(stream) }
        case let .settings(settings):
            try apply(settings)
        case let .ping(data, ack):
            if !ack {
                FrameWriter.ping(data, ack: true, into: &out)
                flush()
            }
        case let .goAway(last, _):
            goingAway = true
            let ours = streams.values.filter { $0.id > last && isOurs($0.id) }
            for stream in ours { finish(stream) }
            let calls = queued
            queued.removeAll()
            for call in calls { call.stream.streamClosed() }
            if streams.isEmpty { context?.close(promise: nil) }
        case let .windowUpdate(0, increment):
            let before = sendWindow
            sendWindow += increment
            guard sendWindow <= Int(Int32.max) else { throw TunnelWireError(code: .flowControl, reason: "the connection's window is over 2^31-1") }
            drainBlocked()
            if before <= 0 { streamsMayRead() }
        case let .windowUpdate(id, increment):
            if idle(id) { throw TunnelWireError(code: .protocolError, reason: "WINDOW_UPDATE on stream \(id), never opened") }
            guard let stream = streams[id] else { return }
            stream.sendWindow += increment
            guard stream.sendWindow <= Int(Int32.max) else { return reset(id, .flowControl) }
            if stream.pending != nil { drainBlocked() } else { stream.windowOpened() }
        case .settingsAck:
            break
        }
    }

    /// DATA counted against the connection's window, which is given back once half is used.
    func received(_ flowed: Int) throws {
        receiveWindow -= flowed
        guard receiveWindow >= 0 else { throw TunnelWireError(code: .flowControl, reason: "DATA past the connection's window") }
        if let increment = Self.increment(receiveWindow, target: TunnelSettings.connectionWindow) {
            receiveWindow += increment
            FrameWriter.windowUpdate(0, increment, into: &out)
            flush()
        }
    }

    /// HEADERS: a call's answer (source side), or a new stream's CONNECT (destination side).
    func opened(_ id: UInt32, _ headers: HPACKHeaders, end: Bool) throws {
        if let stream = streams[id] {
            stream.answer(headers)  // a call's answer (trailers: nothing to carry)
            if end, !stream.gone, streams[id] === stream {
                _ = stream.receive(ByteBuffer(), end: true)
                closeIfDone(stream)
            }
            return
        }
        guard let server, id % 2 == 1, id > lastPeerStream else {
            if idle(id) { throw TunnelWireError(code: .protocolError, reason: "HEADERS on stream \(id), not one the peer may open") }
            return  // the answer to a call cancelled here
        }
        lastPeerStream = id
        guard !goingAway, streams.count < TunnelSettings.maxStreams else { return reset(id, .refusedStream) }
        let stream = FrameStream()
        stream.place(id, in: self)
        if end { _ = stream.receive(ByteBuffer(), end: true) }
        server.open(stream, headers)
    }

    func apply(_ settings: [TunnelSetting]) throws {
        for setting in settings {
            let value = Int(setting.value)
            switch setting.id {
            case TunnelSetting.initialWindowSize:
                let change = value - peerStreamWindow
                peerStreamWindow = value
                for stream in streams.values {
                    stream.sendWindow += change
                    if stream.sendWindow > Int(Int32.max) {
                        throw TunnelWireError(code: .flowControl, reason: "SETTINGS_INITIAL_WINDOW_SIZE takes stream \(stream.id)'s window over 2^31-1")
                    }
                }
            case TunnelSetting.maxFrameSize:
                writer.maxFrameSize = value
            case TunnelSetting.maxConcurrentStreams:
                peerMaxStreams = value
            case TunnelSetting.headerTableSize:
                try? writer.encoder.setDynamicTableSize(min(value, HPACKEncoder.defaultDynamicTableSize))
            default:
                break
            }
        }
        FrameWriter.settingsAck(into: &out)
        drainBlocked()
        streamsMayRead()
        openQueued()
        flush()
    }
}
