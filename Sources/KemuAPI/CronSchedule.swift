import Foundation

/// A CronJob's `schedule`, read as upstream reads it (the standard five fields of robfig/cron's
/// ParseStandard): minute, hour, day of month, month, day of week; each field a list of `*`, `?`,
/// values, ranges `a-b` and steps `/n`, months and weekdays also by name (`jan`, `mon`); and the
/// descriptors `@yearly` `@annually` `@monthly` `@weekly` `@daily` `@midnight` `@hourly`. When both
/// day fields are restricted a day matching either runs (cron's rule); when one is `*` both must.
public struct CronSchedule: Sendable, Equatable {
    public let text: String
    let minutes: Set<Int>, hours: Set<Int>, days: Set<Int>, months: Set<Int>, weekdays: Set<Int>
    let anyDay: Bool, anyWeekday: Bool

    static let descriptors = ["@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
                              "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"]
    static let monthNames = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    static let weekdayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

    /// Throws a ParseError saying what is wrong in which field.
    public init(_ text: String) throws(CronSchedule.ParseError) {
        self.text = text
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed.hasPrefix("TZ=") || trimmed.hasPrefix("CRON_TZ=") {
            throw ParseError("cannot use TZ or CRON_TZ in schedule, use timeZone field instead")
        }
        var expanded = trimmed
        if trimmed.hasPrefix("@") {
            guard let fields = Self.descriptors[trimmed.lowercased()] else {
                throw ParseError("unrecognized descriptor: \(trimmed) (kemu knows \(Self.descriptors.keys.sorted().joined(separator: ", ")))")
            }
            expanded = fields
        }
        let fields = expanded.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard fields.count == 5 else { throw ParseError("expected exactly 5 fields, found \(fields.count): \(text)") }
        let minute = try Self.field(fields[0], "minute", 0...59, names: [])
        let hour = try Self.field(fields[1], "hour", 0...23, names: [])
        let day = try Self.field(fields[2], "day of month", 1...31, names: [])
        let month = try Self.field(fields[3], "month", 1...12, names: Self.monthNames, namesStart: 1)
        let weekday = try Self.field(fields[4], "day of week", 0...6, names: Self.weekdayNames)
        (minutes, hours, days, months, weekdays) = (minute.values, hour.values, day.values, month.values, weekday.values)
        (anyDay, anyWeekday) = (day.star, weekday.star)
    }

    public struct ParseError: Error, CustomStringConvertible, Sendable, Equatable {
        public let description: String
        init(_ message: String) { description = message }
    }

    static func field(_ text: String, _ what: String, _ bounds: ClosedRange<Int>, names: [String],
                      namesStart: Int = 0) throws(ParseError) -> (values: Set<Int>, star: Bool) {
        var values: Set<Int> = []
        var star = false
        for part in text.split(separator: ",", omittingEmptySubsequences: false).map(String.init) {
            let pieces = part.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            guard pieces.count <= 2 else { throw ParseError("too many slashes in \(what): \(part)") }
            var step = 1
            if pieces.count == 2 {
                guard let n = Int(pieces[1]), n > 0, n <= bounds.upperBound + 1 else {
                    throw ParseError("step in \(what) must be a positive number: \(part)")
                }
                step = n
            }
            var range: ClosedRange<Int>
            if pieces[0] == "*" || pieces[0] == "?" {
                range = bounds
                if step == 1 { star = true }
            } else {
                let ends = pieces[0].split(separator: "-", omittingEmptySubsequences: false).map(String.init)
                guard ends.count <= 2 else { throw ParseError("too many hyphens in \(what): \(part)") }
                let low = try value(ends[0], what, bounds, names: names, namesStart: namesStart)
                let high = ends.count == 2 ? try value(ends[1], what, bounds, names: names, namesStart: namesStart)
                    : (pieces.count == 2 ? bounds.upperBound : low)
                guard low <= high else { throw ParseError("beginning of range (\(low)) beyond end of range (\(high)) in \(what): \(part)") }
                range = low...high
            }
            values.formUnion(stride(from: range.lowerBound, through: range.upperBound, by: step))
        }
        return (values, star)
    }

    static func value(_ text: String, _ what: String, _ bounds: ClosedRange<Int>, names: [String],
                      namesStart: Int) throws(ParseError) -> Int {
        if let i = names.firstIndex(of: text.lowercased()) { return i + namesStart }
        guard let n = Int(text), !text.hasPrefix("+") else { throw ParseError("failed to parse \(what) \"\(text)\": not a number") }
        guard bounds.contains(n) else {
            throw ParseError("\(what) \(n) out of range (\(bounds.lowerBound)-\(bounds.upperBound))")
        }
        return n
    }

    func dayMatches(day: Int, weekday: Int) -> Bool {
        let d = days.contains(day), w = weekdays.contains(weekday)
        return anyDay || anyWeekday ? d && w : d || w
    }

    /// The first time after `date` (strictly, whole minutes) the schedule fires in `zone`; nil
    /// when it never does within five years (`0 0 30 2 *`). A time a DST change skips is skipped.
    public func next(after date: Date, in zone: TimeZone) -> Date? {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        let start = Date(timeIntervalSince1970: (date.timeIntervalSince1970 / 60).rounded(.down) * 60 + 60)
        var day = calendar.startOfDay(for: start)
        let (sortedHours, sortedMinutes) = (hours.sorted(), minutes.sorted())
        for _ in 0..<(366 * 5) {
            let c = calendar.dateComponents([.year, .month, .day, .weekday], from: day)
            if let month = c.month, months.contains(month), let d = c.day, let w = c.weekday, dayMatches(day: d, weekday: w - 1) {
                for hour in sortedHours {
                    for minute in sortedMinutes {
                        let wanted = DateComponents(year: c.year, month: month, day: d, hour: hour, minute: minute)
                        guard let t = calendar.date(from: wanted), t >= start, calendar.component(.hour, from: t) == hour else { continue }
                        return t
                    }
                }
            }
            guard let following = calendar.date(byAdding: .day, value: 1, to: day) else { return nil }
            day = following
        }
        return nil
    }

    /// The latest time in (`earliest`, `now`] the schedule fired, and how many times it fired in
    /// that span (counting stops at `limit`, upstream's 100 missed start times).
    public func mostRecent(after earliest: Date, upTo now: Date, in zone: TimeZone, limit: Int = 100) -> (time: Date?, count: Int) {
        var latest: Date?
        var count = 0
        var cursor = earliest
        while count < limit, let t = next(after: cursor, in: zone), t <= now {
            latest = t
            count += 1
            cursor = t
        }
        if count == limit {
            // Too many to walk one by one: the latest is looked for in ever wider spans back from now.
            let spans: [Double] = [3600, 86_400, 32 * 86_400, 366 * 86_400, 5 * 366 * 86_400]
            for span in spans {
                var probe = max(earliest, now.addingTimeInterval(-span))
                var found: Date?
                for _ in 0..<1_500 {
                    guard let t = next(after: probe, in: zone), t <= now else { break }
                    found = t
                    probe = t
                }
                if let found, probe == found, next(after: found, in: zone).map({ $0 > now }) ?? true {
                    latest = found
                    break
                }
            }
        }
        return (latest, count)
    }
}
