import KemuIP

/// A packet an nftables `log group` statement handed over: the rule's prefix and the packet's
/// addresses, protocol and ports.
public struct LoggedPacket: Sendable, Equatable {
    public var prefix: String
    public var source: IPv4Address
    public var destination: IPv4Address
    /// TCP, UDP, ICMP, or the protocol number.
    public var transport: String
    public var sourcePort: UInt16
    public var destinationPort: UInt16
}

/// nfnetlink_log messages (NFULNL_MSG_PACKET) as the kernel sends them, read without trusting
/// a byte: a length that runs past the end, an attribute shorter than its header, a packet too
/// short for its header — each ends or skips that message, never a trap.
public enum NFLog {
    static let packetMessage = UInt16(4 << 8 | 0)  // NFNL_SUBSYS_ULOG, NFULNL_MSG_PACKET
    static let payloadAttribute: UInt16 = 9
    static let prefixAttribute: UInt16 = 10

    /// The packets in one datagram from an NFLOG socket.
    public static func packets(in bytes: [UInt8]) -> [LoggedPacket] {
        var out: [LoggedPacket] = []
        var offset = 0
        while offset + 16 <= bytes.count {
            let length = Int(u32(bytes, offset))
            let type = u16(bytes, offset + 4)
            guard length >= 16, length <= bytes.count - offset else { break }
            if type == packetMessage, let packet = packet(bytes, from: offset + 20, to: offset + length) { out.append(packet) }
            offset += align(length)
        }
        return out
    }

    static func packet(_ bytes: [UInt8], from start: Int, to end: Int) -> LoggedPacket? {
        var prefix = "", payload: ArraySlice<UInt8>?
        var position = start
        while position + 4 <= end {
            let length = Int(u16(bytes, position))
            let type = u16(bytes, position + 2) & 0x3fff
            guard length >= 4, length <= end - position else { break }
            let value = bytes[(position + 4)..<(position + length)]
            if type == prefixAttribute { prefix = String(decoding: value.prefix { $0 != 0 }, as: UTF8.self) }
            if type == payloadAttribute { payload = value }
            position += align(length)
        }
        guard let payload else { return nil }
        return ipv4(Array(payload), prefix: prefix)
    }

    static func ipv4(_ p: [UInt8], prefix: String) -> LoggedPacket? {
        guard p.count >= 20, p[0] >> 4 == 4 else { return nil }
        let header = Int(p[0] & 0x0f) * 4
        guard header >= 20, header <= p.count else { return nil }
        let proto = p[9]
        func address(_ i: Int) -> IPv4Address { IPv4Address(UInt32(p[i]) << 24 | UInt32(p[i + 1]) << 16 | UInt32(p[i + 2]) << 8 | UInt32(p[i + 3])) }
        var packet = LoggedPacket(prefix: prefix, source: address(12), destination: address(16),
                                  transport: [6: "TCP", 17: "UDP", 1: "ICMP", 132: "SCTP"][proto] ?? String(proto), sourcePort: 0, destinationPort: 0)
        if [6, 17, 132].contains(proto), p.count >= header + 4 {
            packet.sourcePort = UInt16(p[header]) << 8 | UInt16(p[header + 1])
            packet.destinationPort = UInt16(p[header + 2]) << 8 | UInt16(p[header + 3])
        }
        return packet
    }

    static func u16(_ b: [UInt8], _ i: Int) -> UInt16 { UInt16(b[i]) | UInt16(b[i + 1]) << 8 }
    static func u32(_ b: [UInt8], _ i: Int) -> UInt32 { UInt32(b[i]) | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2]) << 16 | UInt32(b[i + 3]) << 24 }
    static func align(_ n: Int) -> Int { (n + 3) & ~3 }
}
