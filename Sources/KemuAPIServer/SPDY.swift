import CKemuShim

/// SPDY/3.1 framing, the part `kubectl port-forward` speaks (tunnelled in WebSocket binary
/// messages since kubectl 1.31, KEP-4006): control frames (SYN_STREAM, SYN_REPLY, RST_STREAM,
/// SETTINGS, PING, GOAWAY, WINDOW_UPDATE) and data frames, each an 8-byte header and a payload
/// of at most 2^24 − 1 bytes. Header blocks are zlib-compressed with the protocol's dictionary,
/// one context per direction for the whole session.
enum SPDY {
    static let version: UInt16 = 3
    static let synStream: UInt16 = 1, synReply: UInt16 = 2, rstStream: UInt16 = 3, ping: UInt16 = 6, goAway: UInt16 = 7
    static let fin: UInt8 = 0x01

    struct Frame: Equatable {
        /// Control frames carry a type; data frames a stream.
        var type: UInt16?
        var streamID: UInt32
        var flags: UInt8
        var payload: [UInt8]

        var isControl: Bool { type != nil }
    }

    struct ProtocolError: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    /// Gathers the byte stream (split across messages anywhere) into whole frames.
    struct FrameReader {
        private var buffer: [UInt8] = []
        private var start = 0

        mutating func feed<Bytes: Sequence>(_ bytes: Bytes) where Bytes.Element == UInt8 {
            if start > 0, start == buffer.count { buffer.removeAll(keepingCapacity: true); start = 0 }
            buffer.append(contentsOf: bytes)
        }

        /// The next whole frame, nil until one has arrived.
        mutating func next() throws -> Frame? {
            guard buffer.count - start >= 8 else { return nil }
            let h = buffer[start..<start + 8].map(UInt32.init)
            let length = Int(h[5] << 16 | h[6] << 8 | h[7])
            guard buffer.count - start >= 8 + length else { return nil }
            let payload = Array(buffer[start + 8..<start + 8 + length])
            let flags = UInt8(h[4])
            defer {
                start += 8 + length
                if start > 1 << 16 { buffer.removeFirst(start); start = 0 }
            }
            if h[0] & 0x80 != 0 {
                let version = UInt16(h[0] & 0x7f) << 8 | UInt16(h[1])
                guard version == SPDY.version else { throw ProtocolError("SPDY version \(version); kemu speaks 3") }
                let streamID = payload.count >= 4 ? SPDY.uint32(payload, 0) & 0x7fff_ffff : 0
                return Frame(type: UInt16(h[2]) << 8 | UInt16(h[3]), streamID: streamID, flags: flags, payload: payload)
            }
            return Frame(type: nil, streamID: (h[0] << 24 | h[1] << 16 | h[2] << 8 | h[3]) & 0x7fff_ffff, flags: flags, payload: payload)
        }
    }

    static func uint32(_ bytes: [UInt8], _ at: Int) -> UInt32 {
        bytes[at..<at + 4].reduce(0) { $0 << 8 | UInt32($1) }
    }

    static func bigEndian(_ value: UInt32) -> [UInt8] {
        [UInt8(value >> 24), UInt8(value >> 16 & 0xff), UInt8(value >> 8 & 0xff), UInt8(value & 0xff)]
    }

    static func header(_ first: UInt32, flags: UInt8, length: Int) -> [UInt8] {
        bigEndian(first) + [flags, UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff), UInt8(length & 0xff)]
    }

    /// Data frames for `payload` (split at the frame limit); an empty payload with FIN ends the
    /// stream's sending side.
    static func data(stream: UInt32, _ payload: [UInt8], fin: Bool = false) -> [UInt8] {
        let limit = (1 << 24) - 1
        var out: [UInt8] = []
        var offset = 0
        repeat {
            let chunk = payload[offset..<min(offset + limit, payload.count)]
            offset += chunk.count
            let last = offset >= payload.count
            out += header(stream & 0x7fff_ffff, flags: last && fin ? SPDY.fin : 0, length: chunk.count) + chunk
        } while offset < payload.count
        return out
    }

    static func control(_ type: UInt16, flags: UInt8 = 0, _ payload: [UInt8]) -> [UInt8] {
        header(0x8000_0000 | UInt32(version) << 16 | UInt32(type), flags: flags, length: payload.count) + payload
    }

    /// A header block before compression: a count, then each name and value length-prefixed.
    static func headerBlock(_ headers: [(String, String)]) -> [UInt8] {
        var out = bigEndian(UInt32(headers.count))
        for (name, value) in headers {
            out += bigEndian(UInt32(name.utf8.count)) + Array(name.utf8) + bigEndian(UInt32(value.utf8.count)) + Array(value.utf8)
        }
        return out
    }

    static func parseHeaderBlock(_ block: [UInt8]) throws -> [String: String] {
        func fail() -> ProtocolError { ProtocolError("a header block that does not parse") }
        guard block.count >= 4 else { throw fail() }
        let count = Int(uint32(block, 0))
        var at = 4
        var headers: [String: String] = [:]
        for _ in 0..<min(count, 1024) {
            var pair: [String] = []
            for _ in 0..<2 {
                guard at + 4 <= block.count else { throw fail() }
                let length = Int(uint32(block, at))
                at += 4
                guard length <= block.count - at else { throw fail() }
                pair.append(String(decoding: block[at..<at + length], as: UTF8.self))
                at += length
            }
            headers[pair[0].lowercased()] = pair[1]
        }
        return headers
    }

    /// The SPDY/3 header dictionary (draft 3, section 2.6.10.1): these words, each after its
    /// 32-bit length, then the tail as it is. Adler-32 0xE3C6A7C2, 1,423 bytes.
    static let dictionary: [UInt8] = {
        let words = ["options", "head", "post", "put", "delete", "trace", "accept", "accept-charset", "accept-encoding",
                     "accept-language", "accept-ranges", "age", "allow", "authorization", "cache-control", "connection",
                     "content-base", "content-encoding", "content-language", "content-length", "content-location", "content-md5",
                     "content-range", "content-type", "date", "etag", "expect", "expires", "from", "host", "if-match",
                     "if-modified-since", "if-none-match", "if-range", "if-unmodified-since", "last-modified", "location",
                     "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer", "retry-after",
                     "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent", "vary", "via", "warning",
                     "www-authenticate", "method", "get", "status", "200 OK", "version", "HTTP/1.1", "url", "public",
                     "set-cookie", "keep-alive", "origin"]
        let tail = "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
            + "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
            + "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
            + "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
            + "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
            + "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
        return words.flatMap { bigEndian(UInt32($0.utf8.count)) + Array($0.utf8) } + Array(tail.utf8)
    }()

    /// One direction's header compression context (zlib, primed with the dictionary).
    final class HeaderCodec {
        private let stream: OpaquePointer
        private let deflating: Bool
        /// Where zlib reads the dictionary from for the stream's life.
        private let dictionary: UnsafeMutableBufferPointer<UInt8>
        /// Header blocks larger than this once inflated are refused (a session's are tiny).
        static let maxBlock = 256 << 10

        init(deflating: Bool) throws {
            dictionary = .allocate(capacity: SPDY.dictionary.count)
            _ = dictionary.initialize(from: SPDY.dictionary)
            guard let s = kemu_zstream_new(deflating ? 1 : 0, dictionary.baseAddress, UInt32(dictionary.count)) else {
                dictionary.deallocate()
                throw ProtocolError("zlib cannot start a stream")
            }
            stream = s
            self.deflating = deflating
        }

        deinit {
            kemu_zstream_free(stream)
            dictionary.deallocate()
        }

        func run(_ input: [UInt8]) throws -> [UInt8] {
            let capacity = deflating ? input.count * 2 + 1024 : Self.maxBlock
            var output = [UInt8](repeating: 0, count: capacity)
            let n = input.withUnsafeBufferPointer { i in
                output.withUnsafeMutableBufferPointer { o in kemu_zstream_run(stream, i.baseAddress, UInt(i.count), o.baseAddress, UInt(capacity)) }
            }
            guard n >= 0 else {
                throw ProtocolError(n == -2 ? "a header block larger than \(Self.maxBlock) bytes" : "a header block zlib cannot inflate")
            }
            return Array(output[..<n])
        }
    }
}
