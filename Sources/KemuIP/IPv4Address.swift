/// An IPv4 address as a 32-bit number in host order.
public struct IPv4Address: Hashable, Comparable, Sendable, TextCodable {
    public var value: UInt32

    public init(_ value: UInt32) { self.value = value }

    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    public init?(_ text: String) { self.init(text[...]) }
    public static let expectedText = "an IPv4 address"

    /// Parses dotted quad notation; nil for anything else ("10.0.0", "1.2.3.256", "01.2.3.4").
    /// Byte by byte: a node proxy parses two for every tunnelled connection. Inlinable, so a
    /// caller's use is specialized for its string type (unspecialized, each byte went through
    /// the runtime's generic iterator: a percent of a mesh loop).
    @inlinable
    public init?(_ text: some StringProtocol) {
        var result: UInt32 = 0, octet: UInt32 = 0, digits = 0, dots = 0, leadingZero = false
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                guard !leadingZero, digits < 3 else { return nil }
                leadingZero = digits == 0 && byte == UInt8(ascii: "0")
                octet = octet * 10 + UInt32(byte - UInt8(ascii: "0"))
                digits += 1
            case UInt8(ascii: "."):
                guard digits > 0, octet <= 255, dots < 3 else { return nil }
                result = result << 8 | octet
                (octet, digits, dots, leadingZero) = (0, 0, dots + 1, false)
            default:
                return nil
            }
        }
        guard dots == 3, digits > 0, octet <= 255 else { return nil }
        value = result << 8 | octet
    }

    public var octets: [UInt8] {
        [UInt8(value >> 24), UInt8(value >> 16 & 0xff), UInt8(value >> 8 & 0xff), UInt8(value & 0xff)]
    }

    public var description: String {
        "\(value >> 24).\(value >> 16 & 0xff).\(value >> 8 & 0xff).\(value & 0xff)"
    }

    public static func < (lhs: IPv4Address, rhs: IPv4Address) -> Bool { lhs.value < rhs.value }

    public static func + (lhs: IPv4Address, rhs: UInt32) -> IPv4Address { IPv4Address(lhs.value &+ rhs) }

}
