import NIOCore
import NIOHPACK

/// HTTP/2's frames (RFC 9113 §6) as a tunnel uses them: read from the bytes TLS gives, written
/// into the bytes it sends. Only framing and header compression (HPACK) are done here; what a
/// frame means for a stream or the connection is `TunnelStreams`'.
enum TunnelFrame: Equatable {
    /// A stream's bytes; `flowed` is what the frame counts against flow control (with padding).
    case data(UInt32, ByteBuffer, end: Bool, flowed: Int)
    case headers(UInt32, HPACKHeaders, end: Bool)
    case reset(UInt32, H2Code)
    case settings([TunnelSetting])
    case settingsAck
    case ping(UInt64, ack: Bool)
    case goAway(lastStream: UInt32, H2Code)
    case windowUpdate(UInt32, Int)
}

/// A SETTINGS parameter and its value.
struct TunnelSetting: Equatable {
    var id: UInt16
    var value: UInt32

    static let headerTableSize: UInt16 = 1, enablePush: UInt16 = 2, maxConcurrentStreams: UInt16 = 3,
               initialWindowSize: UInt16 = 4, maxFrameSize: UInt16 = 5
}

/// HTTP/2's error codes (RFC 9113 §7), as far as tunnels send or name them.
struct H2Code: RawRepresentable, Equatable, CustomStringConvertible {
    var rawValue: UInt32
    static let noError = H2Code(rawValue: 0), protocolError = H2Code(rawValue: 1), internalError = H2Code(rawValue: 2),
               flowControl = H2Code(rawValue: 3), streamClosed = H2Code(rawValue: 5), frameSize = H2Code(rawValue: 6),
               refusedStream = H2Code(rawValue: 7), cancel = H2Code(rawValue: 8), compression = H2Code(rawValue: 9)
    var description: String { "HTTP/2 error \(rawValue)" }
}

/// A peer broke the protocol: the connection ends with `code` (a stream's own error is reset
/// where it is met, not thrown).
struct TunnelWireError: Error, CustomStringConvertible {
    var code: H2Code
    var reason: String
    var description: String { "\(reason) (\(code))" }
}

/// Reads frames one at a time from a connection's bytes. A frame not wholly there yet is left
/// for the next read; a header block is decoded once its last CONTINUATION is in. Anything
/// malformed throws, naming the frame and the field.
struct FrameReader {
    static let preface = ByteBuffer(string: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    /// The largest frame this side takes (what it announced as SETTINGS_MAX_FRAME_SIZE).
    var maxFrameSize: Int
    /// A server first reads the client's connection preface.
    var prefaceDue: Bool
    var decoder: HPACKDecoder
    /// A header block waiting for its CONTINUATION frames, and at most this many bytes of one.
    private var block: (stream: UInt32, end: Bool, bytes: ByteBuffer)?
    static let maxHeaderBlock = 64 << 10

    /// How many more bytes complete what `buffer` (what a read left over) begins: the preface,
    /// a frame's head, or a frame that is not read in pieces.
    func needed(_ buffer: ByteBuffer) -> Int {
        if prefaceDue { return max(1, Self.preface.readableBytes - buffer.readableBytes) }
        guard buffer.readableBytes >= 9, let word = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else {
            return 9 - buffer.readableBytes
        }
        return max(1, 9 + Int(word >> 8) - buffer.readableBytes)
    }

    init(maxFrameSize: Int, server: Bool, allocator: ByteBufferAllocator = ByteBufferAllocator()) {
        self.maxFrameSize = maxFrameSize
        prefaceDue = server
        decoder = HPACKDecoder(allocator: allocator)
    }

    /// An unpadded DATA frame being read as its bytes come: its stream, its end flag, and how
    /// many of its bytes are still to come.
    private var streaming: (stream: UInt32, end: Bool, left: Int)?

    /// The next frame at the front of `buffer` (consumed), or nil if none is complete yet.
    /// Frames the tunnels do not use (PRIORITY, unknown types) are skipped. An unpadded DATA
    /// frame comes in pieces, as its bytes arrive (`end` on its last): a large frame is neither
    /// waited for nor gathered into one buffer.
    mutating func next(_ buffer: inout ByteBuffer) throws -> TunnelFrame? {
        if let open = streaming {
            guard buffer.readableBytes > 0, let part = buffer.readSlice(length: min(open.left, buffer.readableBytes)) else { return nil }
            let left = open.left - part.readableBytes
            streaming = left > 0 ? (open.stream, open.end, left) : nil
            return .data(open.stream, part, end: open.end && left == 0, flowed: part.readableBytes)
        }
        if prefaceDue {
            guard buffer.readableBytes >= Self.preface.readableBytes else {
                if buffer.readableBytesView.elementsEqual(Self.preface.readableBytesView.prefix(buffer.readableBytes)) { return nil }
                throw TunnelWireError(code: .protocolError, reason: "the connection does not begin with HTTP/2's preface")
            }
            guard buffer.readSlice(length: Self.preface.readableBytes) == Self.preface else {
                throw TunnelWireError(code: .protocolError, reason: "the connection does not begin with HTTP/2's preface")
            }
            prefaceDue = false
        }
        while buffer.readableBytes >= 9, let word = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self),
              let flags = buffer.getInteger(at: buffer.readerIndex + 4, as: UInt8.self),
              let id = buffer.getInteger(at: buffer.readerIndex + 5, as: UInt32.self) {
            let (length, type, stream) = (Int(word >> 8), UInt8(truncatingIfNeeded: word), id & 0x7fff_ffff)
            guard length <= maxFrameSize else {
                throw TunnelWireError(code: .frameSize, reason: "a frame of type \(type) is \(length) bytes, over the \(maxFrameSize) allowed")
            }
            if let block, type != 9 || stream != block.stream {
                throw TunnelWireError(code: .protocolError, reason: "stream \(block.stream)'s header block is cut by a frame of type \(type)")
            }
            if type == 0, flags & 0x8 == 0, buffer.readableBytes < 9 + length {
                guard stream != 0 else { throw TunnelWireError(code: .protocolError, reason: "a DATA frame on stream 0") }
                buffer.moveReaderIndex(forwardBy: 9)
                streaming = (stream, flags & 0x1 != 0, length)
                return try next(&buffer)
            }
            guard buffer.readableBytes >= 9 + length else { return nil }
            buffer.moveReaderIndex(forwardBy: 9)
            guard var payload = buffer.readSlice(length: length) else { return nil }
            if let frame = try frame(type, flags, stream, &payload, length) { return frame }
        }
        return nil
    }

    private mutating func frame(_ type: UInt8, _ flags: UInt8, _ stream: UInt32, _ payload: inout ByteBuffer, _ length: Int) throws -> TunnelFrame? {
        let end = flags & 0x1 != 0
        func require(_ ok: Bool, _ code: H2Code = .frameSize, _ what: String) throws {
            if !ok { throw TunnelWireError(code: code, reason: what) }
        }
        switch type {
        case 0:  // DATA
            try require(stream != 0, .protocolError, "a DATA frame on stream 0")
            try Self.unpad(&payload, flags, "DATA")
            return .data(stream, payload, end: end, flowed: length)
        case 1:  // HEADERS
            try require(stream != 0, .protocolError, "a HEADERS frame on stream 0")
            try Self.unpad(&payload, flags, "HEADERS")
            if flags & 0x20 != 0 {  // PRIORITY: its five bytes are not used
                try require(payload.readableBytes >= 5, .protocolError, "a HEADERS frame's priority fields are cut short")
                payload.moveReaderIndex(forwardBy: 5)
            }
            block = (stream, end, payload)
            return flags & 0x4 != 0 ? try headerBlock() : nil
        case 2:  // PRIORITY
            try require(stream != 0, .protocolError, "a PRIORITY frame on stream 0")
            try require(length == 5, .frameSize, "a PRIORITY frame of \(length) bytes, not 5")
            return nil
        case 3:  // RST_STREAM
            try require(stream != 0, .protocolError, "a RST_STREAM frame on stream 0")
            guard length == 4, let code = payload.readInteger(as: UInt32.self) else {
                throw TunnelWireError(code: .frameSize, reason: "a RST_STREAM frame of \(length) bytes, not 4")
            }
            return .reset(stream, H2Code(rawValue: code))
        case 4:  // SETTINGS
            try require(stream == 0, .protocolError, "a SETTINGS frame on stream \(stream)")
            if flags & 0x1 != 0 {
                try require(length == 0, .frameSize, "a SETTINGS acknowledgement with \(length) bytes")
                return .settingsAck
            }
            try require(length % 6 == 0, .frameSize, "a SETTINGS frame of \(length) bytes, not a multiple of 6")
            var settings: [TunnelSetting] = []
            while let id = payload.readInteger(as: UInt16.self), let value = payload.readInteger(as: UInt32.self) {
                let setting = TunnelSetting(id: id, value: value)
                try Self.check(setting)
                settings.append(setting)
            }
            return .settings(settings)
        case 5:  // PUSH_PROMISE: neither side pushes
            throw TunnelWireError(code: .protocolError, reason: "a PUSH_PROMISE frame (push is not enabled)")
        case 6:  // PING
            try require(stream == 0, .protocolError, "a PING frame on stream \(stream)")
            guard length == 8, let data = payload.readInteger(as: UInt64.self) else {
                throw TunnelWireError(code: .frameSize, reason: "a PING frame of \(length) bytes, not 8")
            }
            return .ping(data, ack: flags & 0x1 != 0)
        case 7:  // GOAWAY
            try require(stream == 0, .protocolError, "a GOAWAY frame on stream \(stream)")
            guard let last = payload.readInteger(as: UInt32.self), let code = payload.readInteger(as: UInt32.self) else {
                throw TunnelWireError(code: .frameSize, reason: "a GOAWAY frame of \(length) bytes, under 8")
            }
            return .goAway(lastStream: last & 0x7fff_ffff, H2Code(rawValue: code))
        case 8:  // WINDOW_UPDATE
            guard length == 4, let raw = payload.readInteger(as: UInt32.self) else {
                throw TunnelWireError(code: .frameSize, reason: "a WINDOW_UPDATE frame of \(length) bytes, not 4")
            }
            let increment = Int(raw & 0x7fff_ffff)
            try require(increment > 0, .protocolError, "a WINDOW_UPDATE of 0 on stream \(stream)")
            return .windowUpdate(stream, increment)
        case 9:  // CONTINUATION
            guard var open = block else {
                throw TunnelWireError(code: .protocolError, reason: "a CONTINUATION frame on stream \(stream) with no header block open")
            }
            try require(open.bytes.readableBytes + length <= Self.maxHeaderBlock, .protocolError,
                        "stream \(stream)'s header block is over \(Self.maxHeaderBlock) bytes")
            block = nil  // not shared while appended to
            open.bytes.writeBuffer(&payload)
            block = open
            return flags & 0x4 != 0 ? try headerBlock() : nil
        default:  // extensions: ignored, as RFC 9113 §5.5 asks
            return nil
        }
    }

    /// The open header block, decoded (HPACK's state is the connection's: a block that does not
    /// decode ends the connection).
    private mutating func headerBlock() throws -> TunnelFrame {
        guard var open = block else { throw TunnelWireError(code: .protocolError, reason: "no header block open") }
        block = nil
        do {
            let headers = try decoder.decodeHeaders(from: &open.bytes)
            return .headers(open.stream, headers, end: open.end)
        } catch {
            throw TunnelWireError(code: .compression, reason: "stream \(open.stream)'s header block does not decode: \(error)")
        }
    }

    /// Strips a PADDED frame's padding (its length byte first).
    private static func unpad(_ payload: inout ByteBuffer, _ flags: UInt8, _ type: String) throws {
        guard flags & 0x8 != 0 else { return }
        guard let padding = payload.readInteger(as: UInt8.self), Int(padding) <= payload.readableBytes else {
            throw TunnelWireError(code: .protocolError, reason: "a \(type) frame's padding is longer than the frame")
        }
        payload.moveWriterIndex(to: payload.writerIndex - Int(padding))
    }

    /// A setting's value must be one the protocol allows (RFC 9113 §6.5.2).
    static func check(_ s: TunnelSetting) throws {
        switch s.id {
        case TunnelSetting.enablePush where s.value > 1:
            throw TunnelWireError(code: .protocolError, reason: "SETTINGS_ENABLE_PUSH is \(s.value), not 0 or 1")
        case TunnelSetting.initialWindowSize where s.value > 0x7fff_ffff:
            throw TunnelWireError(code: .flowControl, reason: "SETTINGS_INITIAL_WINDOW_SIZE is \(s.value), over 2^31-1")
        case TunnelSetting.maxFrameSize where !(16384...0xff_ffff).contains(s.value):
            throw TunnelWireError(code: .protocolError, reason: "SETTINGS_MAX_FRAME_SIZE is \(s.value), not in 16384...16777215")
        default:
            break
        }
    }
}

/// Writes frames. DATA larger than the peer's largest frame is the caller's to split
/// (flow control decides how much goes at once anyway); a header block is split here.
struct FrameWriter {
    var encoder: HPACKEncoder
    /// The largest frame the peer takes (its SETTINGS_MAX_FRAME_SIZE).
    var maxFrameSize = 16384

    init(allocator: ByteBufferAllocator = ByteBufferAllocator()) {
        encoder = HPACKEncoder(allocator: allocator)
    }

    static func head(_ length: Int, _ type: UInt8, _ flags: UInt8, _ stream: UInt32, into out: inout ByteBuffer) {
        out.writeInteger(UInt8(truncatingIfNeeded: length >> 16))
        out.writeInteger(UInt16(truncatingIfNeeded: length))
        out.writeInteger(type)
        out.writeInteger(flags)
        out.writeInteger(stream & 0x7fff_ffff)
    }

    mutating func headers(_ stream: UInt32, _ headers: HPACKHeaders, end: Bool, into out: inout ByteBuffer) throws {
        var block = ByteBuffer()
        try encoder.encode(headers: headers, to: &block)
        self.headers(stream, HeaderBlock(encoded: block), end: end, into: &out)
    }

    /// A header block encoded already (`HeaderBlock`), in a HEADERS frame and CONTINUATIONs.
    func headers(_ stream: UInt32, _ encoded: HeaderBlock, end: Bool, into out: inout ByteBuffer) {
        var block = encoded.bytes
        var type: UInt8 = 1
        repeat {
            let part = block.readSlice(length: min(block.readableBytes, maxFrameSize)) ?? ByteBuffer()
            let last = block.readableBytes == 0
            Self.head(part.readableBytes, type, (last ? 0x4 : 0) | (end && type == 1 ? 0x1 : 0), stream, into: &out)
            out.writeImmutableBuffer(part)
            type = 9
        } while block.readableBytes > 0
    }

    static func dataHead(_ stream: UInt32, length: Int, end: Bool, into out: inout ByteBuffer) {
        head(length, 0, end ? 0x1 : 0, stream, into: &out)
    }

    static func reset(_ stream: UInt32, _ code: H2Code, into out: inout ByteBuffer) {
        head(4, 3, 0, stream, into: &out)
        out.writeInteger(code.rawValue)
    }

    static func settings(_ settings: [TunnelSetting], into out: inout ByteBuffer) {
        head(settings.count * 6, 4, 0, 0, into: &out)
        for s in settings {
            out.writeInteger(s.id)
            out.writeInteger(s.value)
        }
    }

    static func settingsAck(into out: inout ByteBuffer) { head(0, 4, 0x1, 0, into: &out) }

    static func ping(_ data: UInt64, ack: Bool, into out: inout ByteBuffer) {
        head(8, 6, ack ? 0x1 : 0, 0, into: &out)
        out.writeInteger(data)
    }

    static func goAway(lastStream: UInt32, _ code: H2Code, into out: inout ByteBuffer) {
        head(8, 7, 0, 0, into: &out)
        out.writeInteger(lastStream & 0x7fff_ffff)
        out.writeInteger(code.rawValue)
    }

    static func windowUpdate(_ stream: UInt32, _ increment: Int, into out: inout ByteBuffer) {
        head(4, 8, 0, stream, into: &out)
        out.writeInteger(UInt32(clamping: increment) & 0x7fff_ffff)
    }
}

/// A header block encoded once and sent as often as needed: every field a literal that the
/// peer's decoder does not index (RFC 7541 §6.2.2), so the block means the same whatever either
/// side's dynamic table holds. For the headers sent on every connection (a source's CONNECT, the
/// destination's 200), which through the encoder cost a table search per field each time.
struct HeaderBlock {
    var bytes: ByteBuffer

    init(encoded: ByteBuffer) { bytes = encoded }

    init(literal headers: HPACKHeaders) {
        bytes = ByteBuffer()
        for (name, value, _) in headers {
            bytes.writeInteger(UInt8(0))  // a literal, not indexed, with its name as a literal too
            Self.string(name, into: &bytes)
            Self.string(value, into: &bytes)
        }
    }

    /// `:status: 200`, the static table's entry 8 (RFC 7541 Appendix A).
    static let ok = HeaderBlock(encoded: ByteBuffer(bytes: [0x88]))

    /// A string literal, not Huffman-coded: its length (a 7-bit prefix integer), then its bytes.
    static func string(_ text: String, into out: inout ByteBuffer) {
        integer(text.utf8.count, prefix: 7, into: &out)
        out.writeString(text)
    }

    /// An integer with an N-bit prefix (RFC 7541 §5.1), the prefix's flags clear.
    static func integer(_ value: Int, prefix: Int, into out: inout ByteBuffer) {
        let limit = (1 << prefix) - 1
        guard value >= limit else {
            out.writeInteger(UInt8(value))
            return
        }
        out.writeInteger(UInt8(limit))
        var rest = value - limit
        while rest >= 128 {
            out.writeInteger(UInt8(truncatingIfNeeded: rest & 0x7f | 0x80))
            rest >>= 7
        }
        out.writeInteger(UInt8(rest))
    }
}
