@testable import KemuMesh
import NIOCore
import NIOHPACK
import Testing

/// HTTP/2 framing as the tunnels read and write it: every frame they use goes through whole,
/// a frame cut anywhere waits for its rest, and anything malformed is refused with the HTTP/2
/// error and the field at fault, never a crash.
@Suite struct TunnelWireTests {
    func written(_ write: (inout FrameWriter, inout ByteBuffer) throws -> Void) rethrows -> ByteBuffer {
        var writer = FrameWriter()
        var out = ByteBuffer()
        try write(&writer, &out)
        return out
    }

    func read(_ bytes: ByteBuffer, server: Bool = false) throws -> [TunnelFrame] {
        var reader = FrameReader(maxFrameSize: 1 << 20, server: server)
        var bytes = bytes
        var frames: [TunnelFrame] = []
        while let frame = try reader.next(&bytes) { frames.append(frame) }
        return frames
    }

    /// A frame of `type` with `flags` on `stream`, its payload as given.
    func raw(_ type: UInt8, _ flags: UInt8, _ stream: UInt32, _ payload: [UInt8]) -> ByteBuffer {
        var out = ByteBuffer()
        FrameWriter.head(payload.count, type, flags, stream, into: &out)
        out.writeBytes(payload)
        return out
    }

    func refusal(_ bytes: ByteBuffer, server: Bool = false) -> TunnelWireError? {
        do {
            _ = try read(bytes, server: server)
            return nil
        } catch {
            return error as? TunnelWireError
        }
    }

    /// A block encoded once (every field a literal the peer does not index) reads as its
    /// headers however often it is sent, between blocks the encoder made, and with a value
    /// long enough for a multi-byte length; the 200 is the static table's entry.
    @Test func aBlockEncodedOnceReadsTheSameEachTime() throws {
        let connect: HPACKHeaders = [":method": "CONNECT", ":authority": "10.244.2.2:8080", "forwarded": "for=10.244.1.2",
                                     "baggage": "k8s.workload.name=" + String(repeating: "w", count: 300)]
        let other: HPACKHeaders = [":method": "CONNECT", ":authority": "10.244.2.9:80", "x-extra": "1"]
        let block = HeaderBlock(literal: connect)
        let bytes = try written { writer, out in
            writer.headers(1, block, end: false, into: &out)
            try writer.headers(3, other, end: false, into: &out)
            writer.headers(5, block, end: false, into: &out)
            try writer.headers(7, other, end: false, into: &out)
            writer.headers(9, block, end: true, into: &out)
            writer.headers(11, HeaderBlock.ok, end: false, into: &out)
        }
        #expect(try read(bytes) == [
            .headers(1, connect, end: false), .headers(3, other, end: false), .headers(5, connect, end: false),
            .headers(7, other, end: false), .headers(9, connect, end: true), .headers(11, [":status": "200"], end: false),
        ])
        var long = ByteBuffer()
        HeaderBlock.integer(1337, prefix: 5, into: &long)
        #expect(Array(long.readableBytesView) == [31, 154, 10])  // RFC 7541 C.1.2
    }

    @Test func everyFrameGoesThroughWhole() throws {
        let headers: HPACKHeaders = [":method": "CONNECT", ":authority": "10.244.2.2:8080", "forwarded": "for=10.244.1.2"]
        let bytes = try written { writer, out in
            out.writeImmutableBuffer(FrameReader.preface)
            FrameWriter.settings(TunnelSettings.local, into: &out)
            FrameWriter.settingsAck(into: &out)
            try writer.headers(1, headers, end: false, into: &out)
            FrameWriter.dataHead(1, length: 5, end: true, into: &out)
            out.writeString("hello")
            FrameWriter.windowUpdate(0, 1 << 20, into: &out)
            FrameWriter.windowUpdate(1, 7, into: &out)
            FrameWriter.reset(3, .cancel, into: &out)
            FrameWriter.ping(0xfeed, ack: false, into: &out)
            FrameWriter.goAway(lastStream: 5, .noError, into: &out)
            try writer.headers(3, headers, end: true, into: &out)  // the encoder's table, used again
        }
        let frames = try read(bytes, server: true)
        #expect(frames == [
            .settings(TunnelSettings.local), .settingsAck, .headers(1, headers, end: false),
            .data(1, ByteBuffer(string: "hello"), end: true, flowed: 5), .windowUpdate(0, 1 << 20), .windowUpdate(1, 7),
            .reset(3, .cancel), .ping(0xfeed, ack: false), .goAway(lastStream: 5, .noError), .headers(3, headers, end: true),
        ])
    }

    /// TLS gives bytes in any cuts: a frame (or the preface) not whole yet waits for its rest;
    /// DATA comes in pieces as its bytes do, the end flag on its last.
    @Test func framesCutAnywhereWaitForTheirRest() throws {
        let whole = try written { writer, out in
            out.writeImmutableBuffer(FrameReader.preface)
            try writer.headers(1, [":method": "CONNECT", ":authority": "10.0.0.1:80"], end: false, into: &out)
            FrameWriter.dataHead(1, length: 3, end: true, into: &out)
            out.writeString("abc")
            FrameWriter.ping(1, ack: false, into: &out)
        }
        for cut in 0...whole.readableBytes {
            var reader = FrameReader(maxFrameSize: 1 << 20, server: true)
            var buffer = whole.getSlice(at: 0, length: cut) ?? ByteBuffer()
            var frames: [TunnelFrame] = []
            while let frame = try reader.next(&buffer) { frames.append(frame) }
            var rest = whole.getSlice(at: cut, length: whole.readableBytes - cut) ?? ByteBuffer()
            buffer.writeBuffer(&rest)
            while let frame = try reader.next(&buffer) { frames.append(frame) }
            var (data, flowed, ends, others) = (ByteBuffer(), 0, [Bool](), 0)
            for frame in frames {
                guard case let .data(1, piece, end, count) = frame else {
                    others += 1
                    continue
                }
                data.writeImmutableBuffer(piece)
                flowed += count
                ends.append(end)
            }
            #expect(data == ByteBuffer(string: "abc") && flowed == 3 && ends.last == true && ends.filter { $0 }.count == 1,
                    "cut at \(cut): \(frames)")
            #expect(others == 2 && frames.last == .ping(1, ack: false), "cut at \(cut): \(frames)")
        }
    }

    /// A header block in HEADERS and CONTINUATIONs, padded DATA, PRIORITY and unknown frames
    /// (skipped): what another HTTP/2 implementation may send.
    @Test func continuationsPaddingAndExtensionsAreRead() throws {
        var block = ByteBuffer()
        var encoder = HPACKEncoder(allocator: ByteBufferAllocator())
        try encoder.encode(headers: [":status": "200", "x-long": String(repeating: "v", count: 300)], to: &block)
        let bytes = block.readableBytesView
        let (first, second) = (Array(bytes.prefix(100)), Array(bytes.dropFirst(100)))
        var input = raw(1, 0x20, 1, [0, 0, 0, 0, 16] + first)  // PRIORITY fields, no END_HEADERS
        input.writeImmutableBuffer(raw(9, 0x4, 1, second))
        input.writeImmutableBuffer(raw(2, 0, 1, [0, 0, 0, 0, 16]))
        input.writeImmutableBuffer(raw(0xfa, 0, 0, [1, 2, 3]))
        input.writeImmutableBuffer(raw(0, 0x8 | 0x1, 1, [2, 0x68, 0x69, 0, 0]))
        let frames = try read(input)
        #expect(frames.count == 2, "\(frames)")
        guard case let .headers(1, headers, end: false)? = frames.first else {
            Issue.record("no HEADERS first: \(frames)")
            return
        }
        #expect(headers.first(name: "x-long")?.count == 300)
        #expect(frames.last == .data(1, ByteBuffer(string: "hi"), end: true, flowed: 5))
    }

    @Test func malformedFramesAreRefusedWithTheirFault() throws {
        let cases: [(ByteBuffer, H2Code, String)] = [
            (raw(0, 0, 0, [1]), .protocolError, "DATA frame on stream 0"),
            (raw(0, 0x8, 1, [5, 1, 2]), .protocolError, "padding is longer"),
            (raw(1, 0x4, 0, []), .protocolError, "HEADERS frame on stream 0"),
            (raw(1, 0x4, 1, [0xff, 0xff, 0xff, 0xff]), .compression, "does not decode"),
            (raw(3, 0, 1, [0, 0]), .frameSize, "RST_STREAM frame of 2 bytes"),
            (raw(4, 0, 0, [0, 4, 0]), .frameSize, "not a multiple of 6"),
            (raw(4, 0x1, 0, [0, 0, 0, 0, 0, 0]), .frameSize, "acknowledgement with 6 bytes"),
            (raw(4, 0, 1, []), .protocolError, "SETTINGS frame on stream 1"),
            (raw(4, 0, 0, [0, 2, 0, 0, 0, 2]), .protocolError, "SETTINGS_ENABLE_PUSH is 2"),
            (raw(4, 0, 0, [0, 4, 0x80, 0, 0, 0]), .flowControl, "SETTINGS_INITIAL_WINDOW_SIZE"),
            (raw(4, 0, 0, [0, 5, 0, 0, 0, 1]), .protocolError, "SETTINGS_MAX_FRAME_SIZE is 1"),
            (raw(5, 0x4, 1, [0, 0, 0, 2]), .protocolError, "PUSH_PROMISE"),
            (raw(6, 0, 0, [1, 2, 3]), .frameSize, "PING frame of 3 bytes"),
            (raw(7, 0, 0, [0, 0, 0, 1]), .frameSize, "GOAWAY frame of 4 bytes"),
            (raw(8, 0, 1, [0, 0, 0, 0]), .protocolError, "WINDOW_UPDATE of 0"),
            (raw(8, 0, 1, [0, 0, 1]), .frameSize, "WINDOW_UPDATE frame of 3 bytes"),
            (raw(9, 0x4, 1, [0x82]), .protocolError, "no header block open"),
            (raw(2, 0, 1, [0, 0]), .frameSize, "PRIORITY frame of 2 bytes"),
        ]
        for (bytes, code, fault) in cases {
            let error = refusal(bytes)
            #expect(error?.code == code && error?.reason.contains(fault) == true, "\(fault): \(String(describing: error))")
        }
        var cut = raw(1, 0, 1, [0x82])  // a header block cut by another stream's frame
        cut.writeImmutableBuffer(raw(0, 0, 3, []))
        #expect(refusal(cut)?.reason.contains("header block is cut") == true)
        var big = ByteBuffer()
        FrameWriter.head((1 << 20) + 1, 0, 0, 1, into: &big)
        #expect(refusal(big)?.code == .frameSize, "a frame's length is checked before it is waited for")
        var growing = raw(1, 0, 1, [])
        for _ in 0..<80 { growing.writeImmutableBuffer(raw(9, 0, 1, [UInt8](repeating: 0, count: 1000))) }
        #expect(refusal(growing)?.reason.contains("header block is over") == true)
        #expect(refusal(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r\n"), server: true)?.reason.contains("preface") == true)
        #expect(try read(ByteBuffer(string: "PRI * HTTP"), server: true).isEmpty, "a preface cut short waits")
    }

    /// Random bytes after a valid start: refused or waited on, never a trap.
    @Test func noiseNeverTraps() async {
        var generator = SystemRandomNumberGenerator()
        var refused = 0
        for round in 0..<3000 {
            if round % 200 == 0 { await Task.yield() }  // the cooperative pool is every suite's
            var bytes = round % 2 == 0 ? raw(4, 0, 0, []) : ByteBuffer()
            let length = Int.random(in: 0..<200, using: &generator)
            for _ in 0..<length { bytes.writeInteger(UInt8.random(in: 0...255, using: &generator)) }
            if round % 3 == 0, bytes.readableBytes > 2 { bytes.setInteger(UInt8(0), at: bytes.readerIndex) }  // short lengths
            if refusal(bytes) != nil { refused += 1 }
        }
        #expect(refused > 0)
    }
}
