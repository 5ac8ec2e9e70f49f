import NIOCore
import NIOHPACK

// libFuzzer target: the bytes a tunnel's peer sends, after TLS, read as HTTP/2 frames. The first
// byte chooses the side (a server first reads the preface), the largest frame allowed and how the
// rest is cut into reads, so frames and header blocks arrive whole, in pieces and streamed.
// Nothing traps; a malformed frame is thrown, and reading stops there as the tunnel would. Every
// frame read is written again by `FrameWriter` and read back the same.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTunnelWire(_ data: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: count)
    guard let first = bytes.first else { return 0 }
    var reader = FrameReader(maxFrameSize: first & 0x1 == 0 ? 16_384 : 64, server: first & 0x2 != 0)
    let cut = Int(first >> 2) + 1
    var buffer = ByteBuffer()
    var offset = 1
    while offset < count {
        let end = min(count, offset + cut)
        buffer.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[offset..<end]))
        offset = end
        precondition(reader.needed(buffer) >= 1, "a read asked for no bytes")
        do {
            while let frame = try reader.next(&buffer) {
                if case .data(_, let payload, _, let flowed) = frame {
                    precondition(payload.readableBytes <= flowed && flowed <= reader.maxFrameSize, "a DATA frame past its length")
                } else {
                    roundTrip(frame)
                }
            }
        } catch {
            return 0
        }
    }
    return 0
}

/// Writes a frame as the tunnels do and reads it back: the reader takes what the writer makes.
func roundTrip(_ frame: TunnelFrame) {
    var out = ByteBuffer()
    var writer = FrameWriter()
    switch frame {
    case .data: return
    case .headers(let stream, let headers, let end):
        guard headers.reduce(0, { $0 + $1.name.utf8.count + $1.value.utf8.count }) < 8192 else { return }
        do { try writer.headers(stream, headers, end: end, into: &out) } catch { preconditionFailure("headers read could not be written: \(error)") }
    case .reset(let stream, let code): FrameWriter.reset(stream, code, into: &out)
    case .settings(let settings): FrameWriter.settings(settings, into: &out)
    case .settingsAck: FrameWriter.settingsAck(into: &out)
    case .ping(let data, let ack): FrameWriter.ping(data, ack: ack, into: &out)
    case .goAway(let last, let code): FrameWriter.goAway(lastStream: last, code, into: &out)
    case .windowUpdate(let stream, let increment): FrameWriter.windowUpdate(stream, increment, into: &out)
    }
    var reader = FrameReader(maxFrameSize: 16_384, server: false)
    let again: TunnelFrame?
    do { again = try reader.next(&out) } catch { preconditionFailure("a frame written is refused: \(frame): \(error)") }
    guard let again else { preconditionFailure("a frame written is not read whole: \(frame)") }
    if case .headers(let s1, let h1, let e1) = frame, case .headers(let s2, let h2, let e2) = again {
        precondition(s1 == s2 && e1 == e2 && h1.map { [$0.name, $0.value] } == h2.map { [$0.name, $0.value] }, "headers changed: \(frame) → \(again)")
    } else {
        precondition(frame == again, "a frame changed: \(frame) → \(again)")
    }
    precondition(out.readableBytes == 0, "bytes left after a frame written: \(frame)")
}
