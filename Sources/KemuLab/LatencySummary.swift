import Histogram

/// Percentiles of request latencies, recorded in an HDR histogram (microseconds, three
/// significant digits: a value is exact to 0.1 %), as wrk2 reports them.
public struct LatencySummary: Sendable, Equatable {
    public var count = 0
    public var p50 = 0.0
    public var p90 = 0.0
    public var p99 = 0.0
    public var p999 = 0.0
    public var max = 0.0

    /// The longest latency recorded as itself, one hour; longer ones count as one hour.
    static let highestMicroseconds: UInt64 = 3_600_000_000

    /// `milliseconds`: one latency per request; negative and non-finite values count as 0.
    public init(milliseconds: some Sequence<Double>) {
        var histogram = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: Self.highestMicroseconds,
                                          numberOfSignificantValueDigits: .three)
        for ms in milliseconds {
            let us = ms.isFinite && ms > 0 ? Swift.min(ms * 1000, Double(Self.highestMicroseconds)) : 0
            _ = histogram.record(UInt64(us.rounded()))
        }
        count = Int(histogram.totalCount)
        guard count > 0 else { return }
        let at = { (percentile: Double) in Double(histogram.valueAtPercentile(percentile)) / 1000 }
        (p50, p90, p99, p999) = (at(50), at(90), at(99), at(99.9))
        max = Double(histogram.max) / 1000
    }
}
