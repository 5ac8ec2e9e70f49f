/// A `kemu.dev/v1` Fault: what every node's proxy does to new connections to one Service, for
/// every client or only for clients in some address ranges.
///
/// ```yaml
/// apiVersion: kemu.dev/v1
/// kind: Fault
/// metadata: {name: flaky-web}
/// spec:
///   service: web                                    # in the Fault's namespace
///   sources: [10.244.1.0/24]                        # optional: only these clients
///   latency: {milliseconds: 200, jitterMilliseconds: 50}
///   abort: {percent: 30}                            # reset at once
///   hang: {percent: 10}                             # accepted, never answered
///   bandwidth: {rate: 1mbit}                        # each endpoint pod's link, both ways
/// ```
/// Latency, aborts and hangs live in the proxy (this kernel has no netem); bandwidth is a tbf
/// qdisc on the endpoint pods' veths.
public struct Fault: Equatable, Sendable {
    public var namespace: String
    public var name: String
    public var service: String
    /// CIDRs of the clients it applies to; empty: every client.
    public var sources: [String]
    public var latencyMilliseconds: Int
    public var jitterMilliseconds: Int
    public var abortPercent: Double
    public var hangPercent: Double
    /// What each endpoint pod may send and receive, bytes per second; nil: no limit.
    public var bytesPerSecond: UInt64?

    public static let resource = "faults.kemu.dev"
    /// The spec's fields, for "unknown field" errors.
    public static let specFields = ["service", "sources", "latency", "abort", "hang", "bandwidth"]

    public init(namespace: String = "default", name: String, service: String, sources: [String] = [], latencyMilliseconds: Int = 0,
                jitterMilliseconds: Int = 0, abortPercent: Double = 0, hangPercent: Double = 0, bytesPerSecond: UInt64? = nil) {
        self.namespace = namespace
        self.name = name
        self.service = service
        self.sources = sources
        self.latencyMilliseconds = latencyMilliseconds
        self.jitterMilliseconds = jitterMilliseconds
        self.abortPercent = abortPercent
        self.hangPercent = hangPercent
        self.bytesPerSecond = bytesPerSecond
    }

    /// The Fault an admitted object describes (the API server validated it).
    public init(_ object: JSON) {
        let spec = object["spec"] ?? [:]
        self.init(namespace: object.namespace, name: object.name, service: spec["service"]?.string ?? "",
                  sources: (spec["sources"]?.array ?? []).compactMap(\.string),
                  latencyMilliseconds: Int(spec[path: "latency.milliseconds"]?.int ?? 0),
                  jitterMilliseconds: Int(spec[path: "latency.jitterMilliseconds"]?.int ?? 0),
                  abortPercent: Self.number(spec[path: "abort.percent"]) ?? 0,
                  hangPercent: Self.number(spec[path: "hang.percent"]) ?? 0,
                  bytesPerSecond: spec[path: "bandwidth.rate"]?.string.flatMap(Self.parseRate))
    }

    /// The object for `kubectl apply` / the API.
    public var object: JSON {
        var spec: JSON = ["service": .string(service)]
        if !sources.isEmpty { spec["sources"] = .array(sources.map { .string($0) }) }
        if latencyMilliseconds > 0 || jitterMilliseconds > 0 {
            spec["latency"] = ["milliseconds": .int(Int64(latencyMilliseconds)), "jitterMilliseconds": .int(Int64(jitterMilliseconds))]
        }
        if abortPercent > 0 { spec["abort"] = ["percent": .double(abortPercent)] }
        if hangPercent > 0 { spec["hang"] = ["percent": .double(hangPercent)] }
        if let bytesPerSecond { spec["bandwidth"] = ["rate": .string("\(bytesPerSecond * 8)bit")] }
        var o: JSON = ["apiVersion": "kemu.dev/v1", "kind": "Fault", "spec": spec]
        o.name = name
        o.namespace = namespace
        return o
    }

    /// "200ms±50ms latency, 30% abort, 10% hang, 1mbit" — for tables, events and reports.
    public var summary: String {
        var parts: [String] = []
        if latencyMilliseconds > 0 || jitterMilliseconds > 0 {
            parts.append("\(latencyMilliseconds)ms" + (jitterMilliseconds > 0 ? "±\(jitterMilliseconds)ms" : "") + " latency")
        }
        if abortPercent > 0 { parts.append("\(Self.percent(abortPercent)) abort") }
        if hangPercent > 0 { parts.append("\(Self.percent(hangPercent)) hang") }
        if let bytesPerSecond { parts.append(Self.rateText(bytesPerSecond)) }
        return parts.joined(separator: ", ")
    }

    public static func percent(_ p: Double) -> String { p == p.rounded() ? "\(Int(p))%" : "\(p)%" }

    public static func number(_ v: JSON?) -> Double? {
        switch v {
        case .int(let i): Double(i)
        case .double(let d): d
        case .string(let s): Double(s)
        default: nil
        }
    }

    /// tc's rate units: `bit`, `kbit`, `mbit`, `gbit` (bits per second) and `bps`, `kbps`, `mbps`,
    /// `gbps` (bytes per second), decimal multiples. Returns bytes per second; nil if malformed
    /// or under 1 byte per second.
    public static func parseRate(_ text: String) -> UInt64? {
        let lower = text.lowercased()
        let digits = lower.prefix { $0.isNumber || $0 == "." }
        guard let value = Double(digits), value > 0 else { return nil }
        let units: [String: Double] = ["bit": 1.0 / 8, "kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8,
                                       "bps": 1, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9]
        guard let unit = units[String(lower.dropFirst(digits.count))] else { return nil }
        let bytes = value * unit
        return bytes >= 1 && bytes < 1e12 ? UInt64(bytes) : nil
    }

    static func rateText(_ bytesPerSecond: UInt64) -> String {
        let bits = Double(bytesPerSecond) * 8
        for (unit, size) in [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)] where bits >= size {
            let v = bits / size
            return (v == v.rounded() ? String(Int(v)) : String(format1(v))) + unit
        }
        return "\(Int(bits))bit"
    }

    private static func format1(_ v: Double) -> String {
        let tenths = Int((v * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }
}
