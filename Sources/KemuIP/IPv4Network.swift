/// An IPv4 network in CIDR form: `10.244.0.0/16`. The address is always the network address.
public struct IPv4Network: Hashable, Sendable, TextCodable {
    public let address: IPv4Address
    public let prefixLength: Int

    /// nil when `prefixLength` is out of 0...32 or `address` has host bits set.
    public init?(_ address: IPv4Address, prefixLength: Int) {
        guard (0...32).contains(prefixLength) else { return nil }
        guard address.value & ~Self.mask(prefixLength) == 0 else { return nil }
        self.address = address
        self.prefixLength = prefixLength
    }

    public init?(_ text: String) { self.init(text[...]) }
    public static let expectedText = "an IPv4 CIDR"

    /// Parses `a.b.c.d/n`; nil if malformed or if host bits are set (`10.244.1.0/16`).
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let address = IPv4Address(parts[0]),
              parts[1].allSatisfy(\.isNumber), let length = Int(parts[1]) else { return nil }
        self.init(address, prefixLength: length)
    }

    public static let any = IPv4Network(IPv4Address(0), prefixLength: 0)!

    static func mask(_ length: Int) -> UInt32 { length == 0 ? 0 : UInt32.max << UInt32(32 - length) }

    public var mask: UInt32 { Self.mask(prefixLength) }
    /// Number of addresses, network and broadcast included.
    public var size: UInt64 { 1 << UInt64(32 - prefixLength) }
    public var last: IPv4Address { IPv4Address(address.value | ~mask) }
    public var description: String { "\(address)/\(prefixLength)" }

    public func contains(_ ip: IPv4Address) -> Bool { ip.value & mask == address.value }

    public func overlaps(_ other: IPv4Network) -> Bool {
        contains(other.address) || other.contains(address)
    }

    /// The `index`-th address in the network (0 is the network address).
    public func host(_ index: UInt32) -> IPv4Address? {
        UInt64(index) < size ? address + index : nil
    }

    /// The `index`-th subnet of length `length` inside this network.
    public func subnet(_ index: Int, prefixLength length: Int) -> IPv4Network? {
        guard length >= prefixLength, length <= 32, index >= 0,
              UInt64(index) < (UInt64(1) << UInt64(length - prefixLength)) else { return nil }
        return IPv4Network(address + UInt32(index) << UInt32(32 - length), prefixLength: length)
    }

}

/// An address on an interface with its prefix: `10.244.1.1/24` (host bits allowed).
public struct IPv4Interface: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let address: IPv4Address
    public let prefixLength: Int

    public init(_ address: IPv4Address, prefixLength: Int) {
        self.address = address
        self.prefixLength = prefixLength
    }

    public init?(_ text: String) { self.init(text[...]) }

    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let address = IPv4Address(parts[0]), let length = Int(parts[1]),
              (0...32).contains(length) else { return nil }
        self.init(address, prefixLength: length)
    }

    public var network: IPv4Network {
        IPv4Network(IPv4Address(address.value & IPv4Network.mask(prefixLength)), prefixLength: prefixLength)!
    }

    public var description: String { "\(address)/\(prefixLength)" }

    public static func < (lhs: IPv4Interface, rhs: IPv4Interface) -> Bool {
        (lhs.address, lhs.prefixLength) < (rhs.address, rhs.prefixLength)
    }
}
