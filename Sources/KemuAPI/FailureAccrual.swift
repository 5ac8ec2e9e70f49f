/// Linkerd's failure accrual, set by a Service's annotations (`balancer.linkerd.io/…`): after
/// `maxFailures` consecutive failures an endpoint is left out for a penalty that starts at
/// `minPenalty` and doubles up to `maxPenalty`. kemu counts failed connects (Linkerd counts
/// failed HTTP responses) and maps this onto its own passive ejection.
public struct FailureAccrual: Sendable, Equatable {
    public var maxFailures = 7
    public var minPenaltySeconds = 1.0
    public var maxPenaltySeconds = 60.0
    public var jitterRatio = 0.5

    public static let prefix = "balancer.linkerd.io/failure-accrual"
    public static let mode = prefix
    public static let maxFailuresKey = prefix + "-consecutive-max-failures"
    public static let minPenaltyKey = prefix + "-consecutive-min-penalty"
    public static let maxPenaltyKey = prefix + "-consecutive-max-penalty"
    public static let jitterKey = prefix + "-consecutive-jitter-ratio"

    public init() {}

    /// The accrual the annotations ask for (nil: none asked for), and what is wrong with them,
    /// each naming its annotation; a bad value leaves Linkerd's default in its place.
    public static func parse(_ annotations: [String: String]) -> (FailureAccrual?, [String]) {
        guard let mode = annotations[Self.mode] else { return (nil, []) }
        var problems: [String] = []
        guard mode == "consecutive" else {
            return (nil, ["annotation \(Self.mode): \"\(mode)\" is not \"consecutive\" (the only mode Linkerd has)"])
        }
        var a = FailureAccrual()
        if let text = annotations[maxFailuresKey] {
            if let n = Int(text), (1...1000).contains(n) { a.maxFailures = n } else {
                problems.append("annotation \(maxFailuresKey): \"\(text)\" is not a whole number from 1 to 1000")
            }
        }
        for (key, isMin) in [(minPenaltyKey, true), (maxPenaltyKey, false)] {
            guard let text = annotations[key] else { continue }
            if let s = goDurationSeconds(text), s > 0, s <= 86400 {
                if isMin { a.minPenaltySeconds = s } else { a.maxPenaltySeconds = s }
            } else {
                problems.append("annotation \(key): \"\(text)\" is not a duration such as 500ms, 1s or 1m (up to 24h)")
            }
        }
        if a.maxPenaltySeconds < a.minPenaltySeconds {
            problems.append("annotation \(maxPenaltyKey): shorter than the min penalty; using \(a.minPenaltySeconds) s")
            a.maxPenaltySeconds = a.minPenaltySeconds
        }
        if let text = annotations[jitterKey] {
            if let r = Double(text), (0...100).contains(r) { a.jitterRatio = r } else {
                problems.append("annotation \(jitterKey): \"\(text)\" is not a number from 0 to 100")
            }
        }
        return (a, problems)
    }

    /// Go's duration syntax: "300ms", "1.5s", "1m30s", "2h"; nil for anything else.
    public static func goDurationSeconds(_ text: String) -> Double? {
        let units: [(String, Double)] = [("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1), ("m", 60), ("h", 3600)]
        var rest = Substring(text)
        var total = 0.0
        guard !rest.isEmpty else { return nil }
        while !rest.isEmpty {
            let number = rest.prefix { $0.isNumber || $0 == "." }
            guard !number.isEmpty, let value = Double(number) else { return nil }
            rest = rest.dropFirst(number.count)
            // The longest unit that fits ("ms" before "m").
            guard let (unit, scale) = units.filter({ rest.hasPrefix($0.0) }).max(by: { $0.0.count < $1.0.count }) else { return nil }
            rest = rest.dropFirst(unit.count)
            total += value * scale
        }
        return total.isFinite ? total : nil
    }
}
