import Foundation
@testable import KemuAPIServer
import Testing

/// The SPDY/3.1 pieces port-forward rests on: the dictionary, header blocks through zlib, frames
/// split anywhere, and input that is not SPDY refused without a crash.
@Suite struct SPDYTests {
    @Test func theDictionaryIsTheProtocols() {
        var (a, b): (UInt32, UInt32) = (1, 0)
        for byte in SPDY.dictionary { (a, b) = ((a + UInt32(byte)) % 65521, (b + (a + UInt32(byte)) % 65521) % 65521) }
        #expect(SPDY.dictionary.count == 1423 && (b << 16 | a) == 0xE3C6_A7C2, "its Adler-32 is the one peers check")
    }

    /// What one side compresses the other inflates, block after block in one context.
    @Test func headerBlocksRoundTrip() throws {
        let out = try SPDY.HeaderCodec(deflating: true), back = try SPDY.HeaderCodec(deflating: false)
        for headers in [[("streamtype", "error"), ("port", "8080"), ("requestid", "0")], [("streamtype", "data"), ("port", "8080"), ("requestid", "0")], []] {
            let parsed = try SPDY.parseHeaderBlock(try back.run(try out.run(SPDY.headerBlock(headers))))
            #expect(parsed == Dictionary(uniqueKeysWithValues: headers))
        }
    }

    @Test func framesArriveWhateverTheSplit() throws {
        let stream = SPDY.control(SPDY.ping, SPDY.bigEndian(7)) + SPDY.data(stream: 3, Array("hello".utf8), fin: true)
        for split in 0...stream.count {
            var reader = SPDY.FrameReader()
            reader.feed(stream[..<split])
            var frames: [SPDY.Frame] = []
            while let f = try reader.next() { frames.append(f) }
            reader.feed(stream[split...])
            while let f = try reader.next() { frames.append(f) }
            #expect(frames == [SPDY.Frame(type: SPDY.ping, streamID: 7, flags: 0, payload: SPDY.bigEndian(7)),
                               SPDY.Frame(type: nil, streamID: 3, flags: SPDY.fin, payload: Array("hello".utf8))])
        }
    }

    /// Garbage, a wrong version, header blocks that lie about their lengths or do not inflate:
    /// errors, never a trap.
    @Test func hostileInputIsRefused() throws {
        var reader = SPDY.FrameReader()
        reader.feed([0x80, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00])
        #expect(throws: SPDY.ProtocolError.self) { try reader.next() }
        for block: [UInt8] in [[], [0, 0, 0, 1], [0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff], [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 3, 0x61]] {
            #expect(throws: SPDY.ProtocolError.self) { try SPDY.parseHeaderBlock(block) }
        }
        let inflater = try SPDY.HeaderCodec(deflating: false)
        #expect(throws: SPDY.ProtocolError.self) { try inflater.run(Array("not zlib at all".utf8)) }
        var random = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            var r = SPDY.FrameReader()
            r.feed((0..<Int.random(in: 0..<64, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) })
            while let frame = try? r.next() { _ = frame }
            _ = try? SPDY.parseHeaderBlock((0..<Int.random(in: 0..<64, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) })
        }
    }
}
