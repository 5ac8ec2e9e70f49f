import Foundation
import KemuAPI
import Testing

@Suite struct CronScheduleTests {
    let utc = TimeZone(identifier: "UTC")!

    func date(_ text: String) -> Date { Timestamp.parse(text)! }

    func next(_ schedule: String, after: String, zone: TimeZone? = nil) throws -> String? {
        try CronSchedule(schedule).next(after: date(after), in: zone ?? utc).map(Timestamp.format)
    }

    @Test func fieldsStepsRangesAndNames() throws {
        #expect(try next("*/15 * * * *", after: "2026-12-05T01:07:30Z") == "2026-12-05T01:15:00Z")
        #expect(try next("* * * * *", after: "2026-12-05T01:07:00Z") == "2026-12-05T01:08:00Z", "strictly after")
        #expect(try next("30 9-17/4 * * *", after: "2026-12-05T13:31:00Z") == "2026-12-05T17:30:00Z")
        #expect(try next("0 0 * * mon", after: "2026-12-05T00:00:00Z") == "2026-12-07T00:00:00Z", "5 Dec 2026 is a Saturday")
        #expect(try next("0 12 1 jan,JUL *", after: "2026-12-05T00:00:00Z") == "2027-01-01T12:00:00Z")
        #expect(try next("@hourly", after: "2026-12-05T01:00:00Z") == "2026-12-05T02:00:00Z")
        #expect(try next("@yearly", after: "2026-12-05T01:00:00Z") == "2027-01-01T00:00:00Z")
        #expect(try next("5/20 * * * *", after: "2026-12-05T01:46:00Z") == "2026-12-05T02:05:00Z", "a/n runs from a to the end")
    }

    /// Both day fields restricted: either matches (cron's rule); one of them `*`: both must.
    @Test func dayOfMonthAndDayOfWeek() throws {
        #expect(try next("0 0 13 * fri", after: "2026-12-05T00:00:00Z") == "2026-12-11T00:00:00Z", "a Friday before the 13th")
        #expect(try next("0 0 13 * *", after: "2026-12-05T00:00:00Z") == "2026-12-13T00:00:00Z")
        #expect(try next("0 0 * * fri", after: "2026-12-05T00:00:00Z") == "2026-12-11T00:00:00Z")
        #expect(try next("0 0 30 2 *", after: "2026-12-05T00:00:00Z") == nil, "never: no 30 February")
    }

    @Test func timeZones() throws {
        let tokyo = try #require(TimeZone(identifier: "Asia/Tokyo"))
        #expect(try next("0 9 * * *", after: "2026-12-05T01:00:00Z", zone: tokyo) == "2026-12-06T00:00:00Z", "09:00 in Tokyo is 00:00 UTC")
    }

    @Test func badSchedulesSayWhatIsWrong() {
        for (text, says) in [("61 * * * *", "minute 61 out of range"), ("* * * *", "expected exactly 5 fields"),
                             ("* * * * 7", "day of week 7 out of range"), ("*/0 * * * *", "step in minute"),
                             ("5-1 * * * *", "beginning of range"), ("@every 1m", "unrecognized descriptor"),
                             ("TZ=UTC * * * * *", "use timeZone field"), ("x * * * *", "failed to parse minute"),
                             ("1,,2 * * * *", "failed to parse minute")] {
            #expect(throws: CronSchedule.ParseError.self, "\(text)") { try CronSchedule(text) }
            do { _ = try CronSchedule(text) } catch { #expect(error.description.contains(says), "\(text): \(error.description)") }
        }
    }

    /// The latest missed time and how many were missed; past 100 the count stops, and the
    /// latest is still found.
    @Test func mostRecentMissedTime() throws {
        let every = try CronSchedule("* * * * *")
        let (time, count) = every.mostRecent(after: date("2026-12-05T01:00:00Z"), upTo: date("2026-12-05T01:05:30Z"), in: utc)
        #expect(time.map(Timestamp.format) == "2026-12-05T01:05:00Z" && count == 5)
        let (late, many) = every.mostRecent(after: date("2026-12-01T00:00:00Z"), upTo: date("2026-12-05T01:05:30Z"), in: utc)
        #expect(late.map(Timestamp.format) == "2026-12-05T01:05:00Z" && many == 100)
        let daily = try CronSchedule("0 3 * * *")
        let (old, few) = daily.mostRecent(after: date("2026-06-01T00:00:00Z"), upTo: date("2026-12-05T01:05:30Z"), in: utc)
        #expect(old.map(Timestamp.format) == "2026-12-04T03:00:00Z" && few == 100)
        #expect(every.mostRecent(after: date("2026-12-05T01:05:00Z"), upTo: date("2026-12-05T01:05:59Z"), in: utc).time == nil)
    }
}
