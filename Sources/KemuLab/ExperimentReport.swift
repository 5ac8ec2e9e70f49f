import Foundation
import KemuAPI
import KemuCluster
import KemuSystem

/// What an experiment measured: every request, every action with the time it happened, the
/// ready-endpoint samples, and each proxy's history of endpoint changes; and what follows from
/// them (failures, shares, and for each action how long the cluster took to adapt).
public struct ExperimentReport: Sendable {
    public typealias Request = LoadResult

    public struct ActionRecord: Sendable {
        var action: Experiment.Action
        var time: Double
        var detail = ""
        /// Endpoints (ip:port) the action takes away, to be looked for in the proxies.
        var victims: Set<String> = []
        /// The node the action cut off: its own proxy is not expected to follow.
        var excludedNode: String?
    }

    let experiment: Experiment
    let loads: [(load: Experiment.Load, target: String)]
    var start = 0.0
    var requests: [[Request]]
    var actions: [ActionRecord] = []
    var samples: [(Double, Int)] = []
    var histories: [String: JSON] = [:]
    var retries = 0
    var replays = 0
    var healed: [String] = []
    static let bucketSeconds = 0.1

    init(experiment: Experiment, loads: [(Experiment.Load, String)]) {
        self.experiment = experiment
        self.loads = loads.map { (load: $0.0, target: $0.1) }
        requests = Array(repeating: [], count: loads.count)
    }

    var all: [Request] { requests.flatMap { $0 } }

    // MARK: what follows from the measurements

    struct Adaptation {
        /// Requests that went out in the action's window (a loaded generator catching up sends
        /// more than the rate), and how many of those failed.
        var sent = 0
        var failures = 0
        /// The slowest request due in the action's window, ms from when it was due, and from when it went out.
        var slowestMs: Double = 0
        var slowestRawMs: Double = 0
        /// Until the last failed request after the action (and before the next), ms; 0: none failed.
        var errorsStoppedMs: Double = 0
        /// Until no proxy (but the cut-off node's) had the action's endpoints, ms, and how many
        /// proxies that covers.
        var goneFromProxiesMs: Double?
        var proxiesMeasured = 0
        var proxiesLagging = 0
        /// Until the Service had as many ready endpoints as before, ms (nil: it never dipped, or
        /// never recovered within the experiment).
        var replacementReadyMs: Double?
        var dipped = false
    }

    func adaptation(_ index: Int) -> Adaptation {
        let record = actions[index]
        let t = record.time
        let end = index + 1 < actions.count ? actions[index + 1].time : start + experiment.duration + 5
        var a = Adaptation()
        // Requests due in the action's window; when they failed is when the client saw it. A
        // failure counts where the request went out: one due just before the next action but
        // sent after it (a loaded machine) met that action, not this one.
        let window = all.filter { $0.intended >= t && $0.intended < end }
        let wentOut = all.filter { max($0.intended, $0.sent) >= t && max($0.intended, $0.sent) < end }
        let failed = wentOut.filter { !$0.ok }
        a.sent = wentOut.count
        a.failures = failed.count
        a.slowestMs = window.map(\.correctedMs).max() ?? 0
        a.slowestRawMs = window.map(\.rawMs).max() ?? 0
        if let last = failed.map({ $0.intended + $0.correctedMs / 1000 }).max() { a.errorsStoppedMs = (last - t) * 1000 }
        if !record.victims.isEmpty {
            let keys = Set(loads.filter { !$0.load.service.isEmpty }.map { "\(experiment.namespace)/\($0.load.service)" })
            var worst: Double?
            for (node, history) in histories where node != record.excludedNode {
                guard let delay = Self.removal(history, keys: keys, victims: record.victims, after: t) else { continue }
                a.proxiesMeasured += 1
                if delay < 0 { a.proxiesLagging += 1; continue }
                worst = max(worst ?? 0, delay)
            }
            if a.proxiesLagging == 0 { a.goneFromProxiesMs = worst.map { $0 * 1000 } }
        }
        let before = samples.last { $0.0 < t }?.1 ?? samples.first?.1 ?? 0
        if let dip = samples.firstIndex(where: { $0.0 >= t && $0.1 < before }) {
            a.dipped = true
            if let back = samples[dip...].first(where: { $0.1 >= before }) { a.replacementReadyMs = (back.0 - t) * 1000 }
        }
        return a
    }

    /// Seconds from `t` until this proxy's endpoints of `keys` held none of `victims`; nil when
    /// it held none at `t` already (nothing to measure), -1 when it still held one at the end.
    static func removal(_ history: JSON, keys: Set<String>, victims: Set<String>, after t: Double) -> Double? {
        var delay: Double?
        for key in keys {
            let changes = (history[key]?.array ?? []).compactMap { c -> (Double, Set<String>)? in
                guard let time = c["time"].flatMap(Fault.number) else { return nil }
                return (time, Set((c["endpoints"]?.array ?? []).compactMap(\.string)))
            }
            guard let atAction = changes.last(where: { $0.0 < t }), !atAction.1.isDisjoint(with: victims) else { continue }
            guard let gone = changes.first(where: { $0.0 >= t && $0.1.isDisjoint(with: victims) }) else { return -1 }
            delay = max(delay ?? 0, gone.0 - t)
        }
        return delay
    }

    /// Answers per endpoint pod over every load.
    func shares(_ requests: [Request]) -> [(String, Int)] {
        var counts: [String: Int] = [:]
        for r in requests where r.ok { counts[r.detail, default: 0] += 1 }
        return counts.sorted { ($0.value, $1.key) > ($1.value, $0.key) }
    }

    /// The requests' latencies from when each was due (open loop: what a user waited).
    static func latencies(_ requests: [Request]) -> LatencySummary { LatencySummary(milliseconds: requests.map(\.correctedMs)) }

    /// The same from when each actually went out (what a closed-loop tool would report).
    static func rawLatencies(_ requests: [Request]) -> LatencySummary { LatencySummary(milliseconds: requests.map(\.rawMs)) }

    func failureKinds(_ requests: [Request]) -> [(String, Int)] {
        var counts: [String: Int] = [:]
        for r in requests where !r.ok { counts[r.detail, default: 0] += 1 }
        return counts.sorted { $0.key < $1.key }
    }

    struct Bucket {
        var ok = 0
        var failed = 0
        var pods: [String: Int] = [:]
    }

    var buckets: [Bucket] {
        let count = Int((experiment.duration / Self.bucketSeconds).rounded(.up))
        var buckets = Array(repeating: Bucket(), count: max(count, 1))
        for r in all {
            let offset = (r.intended - start) / Self.bucketSeconds
            let i = offset.isFinite ? Int(min(max(offset, 0), Double(buckets.count - 1))) : 0
            if r.ok { buckets[i].ok += 1; buckets[i].pods[r.detail, default: 0] += 1 } else { buckets[i].failed += 1 }
        }
        return buckets
    }

    // MARK: output

    static func ms(_ v: Double?) -> String { v.map { String(format: "%.0f ms", $0) } ?? "-" }

    public func table() -> String {
        var out = "experiment \(experiment.name): \(Experiment.format(experiment.duration)), \(loads.count) load\(loads.count == 1 ? "" : "s"), \(actions.count) actions\n\n"
        out += TextTable.render(["LOAD", "TARGET", "MODE", "SENT", "OK", "FAILED", "FAILURES", "P50 / P99 / MAX", "RAW P99"], loads.indices.map { i in
            let r = requests[i]
            let failed = r.filter { !$0.ok }.count
            let l = loads[i].load
            let t = Self.latencies(r), raw = Self.rawLatencies(r)
            return [l.name, "\(l.from) → \(loads[i].target)" + (l.service.isEmpty ? "" : " (\(l.service) via \(l.via))"), l.keepAlive ? "keep-alive" : "connect",
                    String(r.count), String(r.count - failed), String(failed), failureKinds(r).map { "\($0.0) \($0.1)" }.joined(separator: ", ").ifEmpty("-"),
                    String(format: "%.1f / %.1f / %.0f ms", t.p50, t.p99, t.max), String(format: "%.1f ms", raw.p99)]
        })
        out += "latencies count from when each request was due on the load's schedule (open loop, as wrk2); RAW from when it went out\n"
        let total = max(all.filter(\.ok).count, 1)
        out += "\n" + TextTable.render(["ENDPOINT", "ANSWERS", "SHARE"], shares(all).map { [$0.0, String($0.1), String(format: "%.1f%%", Double($0.1) * 100 / Double(total))] })
        out += "\nthe proxies (every node's and the load balancer's) retried \(retries) connects on another endpoint and replayed \(replays) connections whose endpoint ended before answering\n"
        if !actions.isEmpty {
            out += "\n" + TextTable.render(["AT", "ACTION", "FAILED", "SLOWEST", "ERRORS STOPPED", "GONE FROM PROXIES", "READY AGAIN"], actions.indices.map { i in
                let r = actions[i], a = adaptation(i)
                let gone = r.victims.isEmpty ? "-" : a.proxiesLagging > 0 ? "\(a.proxiesLagging) of \(a.proxiesMeasured) still had it"
                    : a.proxiesMeasured == 0 ? "already gone" : "\(Self.ms(a.goneFromProxiesMs)) (\(a.proxiesMeasured) proxies)"
                let ready = !a.dipped ? "-" : a.replacementReadyMs == nil ? "not within the run" : Self.ms(a.replacementReadyMs)
                return [String(format: "%.2fs", r.time - start), r.action.description + (r.detail.isEmpty ? "" : " (\(r.detail))"), String(a.failures), Self.ms(a.slowestMs),
                        a.failures == 0 ? "-" : Self.ms(a.errorsStoppedMs), gone, ready]
            })
        }
        if !healed.isEmpty { out += "\nundone at the end: \(healed.joined(separator: "; "))\n" }
        return out
    }

    public func json() -> JSON {
        let loadsJSON: [JSON] = loads.indices.map { i in
            let r = requests[i], l = loads[i].load, t = Self.latencies(r), raw = Self.rawLatencies(r)
            return ["name": .string(l.name), "p50Ms": .double(t.p50), "p90Ms": .double(t.p90), "p99Ms": .double(t.p99), "p999Ms": .double(t.p999), "maxMs": .double(t.max),
                    "rawP50Ms": .double(raw.p50), "rawP99Ms": .double(raw.p99), "rawMaxMs": .double(raw.max), "service": .string(l.service), "via": .string(l.via), "from": .string(l.from),
                    "target": .string(loads[i].target), "mode": .string(l.keepAlive ? "keep-alive" : "connect"),
                    "sent": .int(Int64(r.count)), "ok": .int(Int64(r.filter(\.ok).count)), "failed": .int(Int64(r.filter { !$0.ok }.count)),
                    "failures": .object(JSONObject(failureKinds(r).map { ($0.0, JSON.int(Int64($0.1))) })),
                    "endpoints": .object(JSONObject(shares(r).map { ($0.0, JSON.int(Int64($0.1))) }))]
        }
        let actionsJSON: [JSON] = actions.indices.map { i in
            let r = actions[i], a = adaptation(i)
            var o: JSON = ["at": .double(r.time - start), "line": .int(Int64(r.action.line)), "action": .string(r.action.description),
                           "sent": .int(Int64(a.sent)), "failed": .int(Int64(a.failures)), "errorsStoppedMs": .double(a.errorsStoppedMs), "slowestMs": .double(a.slowestMs),
                           "slowestRawMs": .double(a.slowestRawMs),
                           "victims": .array(r.victims.sorted().map { .string($0) }), "proxiesMeasured": .int(Int64(a.proxiesMeasured))]
            if !r.detail.isEmpty { o["detail"] = .string(r.detail) }
            if let g = a.goneFromProxiesMs { o["goneFromProxiesMs"] = .double(g) }
            if let ready = a.replacementReadyMs { o["readyAgainMs"] = .double(ready) }
            return o
        }
        let bucketsJSON: [JSON] = buckets.enumerated().map { i, b in
            ["t": .double(Double(i) * Self.bucketSeconds), "ok": .int(Int64(b.ok)), "failed": .int(Int64(b.failed)),
             "endpoints": .object(JSONObject(b.pods.sorted { $0.key < $1.key }.map { ($0.key, JSON.int(Int64($0.value))) }))]
        }
        let slowest: [JSON] = requests.enumerated().flatMap { i, r in r.map { (loads[i].load.name, $0) } }
            .sorted { $0.1.correctedMs > $1.1.correctedMs }.prefix(10).map { load, r in
                ["load": .string(load), "at": .double(r.intended - start), "sentAt": .double(r.sent - start), "ms": .double(r.correctedMs),
                 "rawMs": .double(r.rawMs), "ok": .bool(r.ok), "detail": .string(r.detail)]
            }
        return ["experiment": .string(experiment.name),
                "latency": "ms from each request's intended send time (open loop); raw: from when it was sent", "file": .string(experiment.source), "start": .double(start), "slowest": .array(slowest),
                "durationSeconds": .double(experiment.duration), "loads": .array(loadsJSON), "proxyRetries": .int(Int64(retries)), "proxyReplays": .int(Int64(replays)),
                "actions": .array(actionsJSON), "undone": .array(healed.map { .string($0) }), "buckets": .array(bucketsJSON)]
    }

    public func svg() -> String { TimelinePicture(report: self).svg() }
}

extension String {
    func ifEmpty(_ other: String) -> String { isEmpty ? other : self }
}

extension JSONObject {
    init(_ pairs: [(String, JSON)]) {
        self.init()
        for (k, v) in pairs { self[k] = v }
    }
}
