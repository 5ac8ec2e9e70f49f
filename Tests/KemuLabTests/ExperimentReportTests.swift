import Foundation
import KemuAPI
@testable import KemuLab
import Testing

/// What the report concludes from measurements, on measurements made up for the purpose.
@Suite struct ExperimentReportTests {
    static let experiment = try! Experiment.parse("""
        name: t
        duration: 2s
        load: {service: web}
        actions:
          - {at: 500ms, kill-pod: web-1}
          - {at: 1500ms, partition: node-2}
        """, source: "t.yaml")

    func request(_ at: Double, ok: Bool = true, _ detail: String = "web-1", ms: Double = 1, raw: Double? = nil) -> LoadResult {
        LoadResult(intended: 100 + at, sent: 100 + at + (ms - (raw ?? ms)) / 1000, ok: ok, detail: detail, correctedMs: ms, rawMs: raw ?? ms)
    }

    func report(_ requests: [LoadResult]) -> ExperimentReport {
        var report = ExperimentReport(experiment: Self.experiment, loads: [(Self.experiment.loads[0], "10.96.0.20:80")])
        report.start = 100
        report.requests[0] = requests
        report.actions = Self.experiment.actions.map { ExperimentReport.ActionRecord(action: $0, time: 100 + $0.at) }
        return report
    }

    @Test func failuresAndSlowestAreCountedInTheirActionsWindow() {
        let r = report([request(0.1), request(0.6, ok: false, "reset", ms: 3), request(0.7, ms: 250, raw: 20), request(0.9, ok: false, "refused", ms: 5),
                        request(1.6, ms: 40)])
        let kill = r.adaptation(0), cut = r.adaptation(1)
        #expect(kill.failures == 2)
        #expect(kill.slowestMs == 250 && kill.slowestRawMs == 20)
        // The last failure ended at 0.9 s + 5 ms: 405 ms after the kill at 0.5 s.
        #expect(abs(kill.errorsStoppedMs - 405) < 0.001)
        #expect(cut.failures == 0 && cut.slowestMs == 40 && cut.errorsStoppedMs == 0)
        #expect(r.failureKinds(r.all).map(\.0) == ["refused", "reset"])
        // Due before the partition but sent after it (a late client): the partition's failure.
        let late = report([request(1.49, ok: false, "reset", ms: 30, raw: 5)])
        #expect(late.adaptation(0).failures == 0 && late.adaptation(1).failures == 1)
    }

    @Test func sharesCountAnswersPerPod() {
        let r = report([request(0.1, "web-1"), request(0.2, "web-2"), request(0.3, "web-2"), request(0.4, ok: false, "reset")])
        #expect(r.shares(r.all).map(\.0) == ["web-2", "web-1"])
        #expect(r.shares(r.all).map(\.1) == [2, 1])
    }

    @Test func bucketsFollowIntendedTimes() {
        let r = report([request(0.05), request(0.15, ok: false, "timeout", ms: 900), request(0.17), request(1.99), request(-3), request(.infinity)])
        let b = r.buckets
        #expect(b.count == 20)
        #expect(b[0].ok == 3)  // 0.05 s, and the two out of range pinned to the first bucket
        #expect(b[1].ok == 1 && b[1].failed == 1)
        #expect(b[19].ok == 1)
    }

    @Test func readyAgainIsTimedFromTheDipBack() {
        var r = report([])
        r.samples = [(100.4, 3), (100.55, 2), (100.65, 2), (100.9, 3)]
        let a = r.adaptation(0)
        #expect(a.dipped)
        #expect(abs((a.replacementReadyMs ?? 0) - 400) < 0.001)
    }

    @Test func proxyHistoriesTellWhenTheEndpointWasGone() throws {
        var r = report([])
        let history = { (gone: Double) -> JSON in
            ["default/web": [["time": .double(99), "endpoints": ["10.244.1.2:8080", "10.244.2.2:8080"]],
                             ["time": .double(100.5 + gone), "endpoints": ["10.244.2.2:8080"]]]]
        }
        r.histories = ["node-1": history(0.02), "node-2": history(0.05)]
        r.actions[0].victims = ["10.244.1.2:8080"]
        let a = r.adaptation(0)
        #expect(a.proxiesMeasured == 2 && a.proxiesLagging == 0)
        #expect(abs((a.goneFromProxiesMs ?? 0) - 50) < 0.001)
        // A proxy that never dropped it is lagging: no time is claimed for the action.
        r.histories["node-3"] = ["default/web": [["time": .double(99), "endpoints": ["10.244.1.2:8080"]]]]
        #expect(r.adaptation(0).proxiesLagging == 1 && r.adaptation(0).goneFromProxiesMs == nil)
    }

    @Test func tableAndJSONSayWhichLatencyIsWhich() throws {
        let r = report((0..<100).map { request(Double($0) / 100, ms: $0 == 99 ? 800 : 2, raw: 2) })
        let table = r.table()
        #expect(table.contains("P50 / P99 / MAX"))
        #expect(table.contains("RAW P99"))
        #expect(table.contains("open loop"))
        let load = try #require(r.json()["loads"]?.array?.first)
        #expect(load["p99Ms"].flatMap(Fault.number).map { $0 >= 2 && $0 < 3 } == true)
        #expect(load["maxMs"].flatMap(Fault.number).map { abs($0 - 800) < 1 } == true)
        #expect(load["rawMaxMs"].flatMap(Fault.number).map { $0 < 3 } == true)
        #expect(r.json()["latency"]?.string?.contains("intended") == true)
    }

    @Test func latencySummaryIsExactToATenthOfAPercent() {
        let s = LatencySummary(milliseconds: (1...1000).map(Double.init))
        #expect(s.count == 1000)
        #expect(abs(s.p50 - 500) <= 0.5)
        #expect(abs(s.p99 - 990) <= 1)
        #expect(abs(s.max - 1000) <= 1)
        // Nothing recorded, and values no histogram can hold, do not trap.
        #expect(LatencySummary(milliseconds: []).p99 == 0)
        #expect(LatencySummary(milliseconds: [.nan, -5, .infinity, 1e300]).count == 4)
    }

    @Test func timelineMarksActionsWhereTheyHappened() {
        var r = report([request(0.1)])
        r.actions[0].action.target = "<web & co>"
        let svg = r.svg()
        // 1000 px wide, 60 px left margin, 20 px right: 920 px for 2 s; the kill at 0.5 s is at x = 290.
        #expect(svg.contains("<line x1=\"290.0\""))
        #expect(svg.contains("&lt;web &amp; co&gt;"))
        #expect(!svg.contains("<web & co>"))
    }
}
