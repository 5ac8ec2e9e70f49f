import Foundation

/// RFC 3339 timestamps as Kubernetes writes them: `2026-11-22T01:37:30Z`.
public enum Timestamp {
    public static func now() -> String { format(Date()) }

    public static func format(_ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&t, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
                      parts.tm_hour, parts.tm_min, parts.tm_sec)
    }

    /// With nanoseconds, as upstream writes `endpoints.kubernetes.io/last-change-trigger-time`
    /// (RFC 3339 Nano): `2026-11-22T01:37:30.123456789Z`.
    public static func formatNano(_ date: Date) -> String {
        let seconds = date.timeIntervalSince1970.rounded(.down)
        let nanos = Int((date.timeIntervalSince1970 - seconds) * 1e9)
        return String(format: "%@.%09dZ", String(format(date).dropLast()), nanos)
    }

    /// With microseconds, as upstream's MicroTime (a Lease's renewTime): `2026-11-22T01:37:30.123456Z`.
    public static func formatMicro(_ date: Date) -> String {
        let seconds = date.timeIntervalSince1970.rounded(.down)
        let micros = min(Int((date.timeIntervalSince1970 - seconds) * 1e6), 999_999)
        return String(format: "%@.%06dZ", String(format(date).dropLast()), micros)
    }

    /// Parses `Z` and `+hh:mm` forms (the python client sends `+00:00`), with or without a
    /// fraction of any length (upstream writes nanoseconds).
    public static func parse(_ text: String) -> Date? {
        var whole = text
        var fraction = 0.0
        if let dot = text.firstIndex(of: "."), let end = text[dot...].dropFirst().firstIndex(where: { !$0.isNumber }) {
            fraction = Double("0" + text[dot..<end]) ?? 0
            whole = String(text[..<dot] + text[end...])
        }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: whole).map { $0.addingTimeInterval(fraction) }
    }
}
