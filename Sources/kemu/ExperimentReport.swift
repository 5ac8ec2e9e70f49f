import Foundation
import KemuAPI
import KemuSystem

/// What an experiment measured: every request, every action with the time it happened, the
/// ready-endpoint samples, and each proxy's history of endpoint changes; and what follows from
/// them (failures, shares, and for each action how long the cluster took to adapt).
struct ExperimentReport {
    struct Request {
        var time: Double
        var ok: Bool
        /// The pod that answered, or the failure's kind.
        var detail: String
        var milliseconds: Double

        /// A `kemu loadgen` line: `TIME ok POD MS` or `TIME fail KIND MS`.
        init?(line: Substring) {
            let f = line.split(separator: " ")
            guard f.count == 4, let t = Double(f[0]), let ms = Double(f[3]) else { return nil }
            time = t
            ok = f[1] == "ok"
            detail = String(f[2])
            milliseconds = ms
        }
    }

    struct ActionRecord {
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
        var failures = 0
        /// The slowest request started in the action's window, ms.
        var slowestMs: Double = 0
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
        // Requests started in the action's window; when they failed is when the client saw it.
        let window = all.filter { $0.time >= t && $0.time < end }
        let failed = window.filter { !$0.ok }
        a.failures = failed.count
        a.slowestMs = window.map(\.milliseconds).max() ?? 0
        if let last = failed.map({ $0.time + $0.milliseconds / 1000 }).max() { a.errorsStoppedMs = (last - t) * 1000 }
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

    /// p50, p99 and the slowest of the requests' times, ms.
    static func latencies(_ requests: [Request]) -> (p50: Double, p99: Double, max: Double) {
        let sorted = requests.map(\.milliseconds).sorted()
        guard !sorted.isEmpty else { return (0, 0, 0) }
        let at = { (p: Double) in sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        return (at(0.5), at(0.99), sorted.last!)
    }

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
            let i = min(max(Int((r.time - start) / Self.bucketSeconds), 0), buckets.count - 1)
            if r.ok { buckets[i].ok += 1; buckets[i].pods[r.detail, default: 0] += 1 } else { buckets[i].failed += 1 }
        }
        return buckets
    }

    // MARK: output

    static func ms(_ v: Double?) -> String { v.map { String(format: "%.0f ms", $0) } ?? "-" }

    func table() -> String {
        var out = "experiment \(experiment.name): \(Experiment.format(experiment.duration)), \(loads.count) load\(loads.count == 1 ? "" : "s"), \(actions.count) actions\n\n"
        out += Status.table(["LOAD", "TARGET", "MODE", "SENT", "OK", "FAILED", "FAILURES", "P50 / P99 / MAX"], loads.indices.map { i in
            let r = requests[i]
            let failed = r.filter { !$0.ok }.count
            let l = loads[i].load
            let t = Self.latencies(r)
            return [l.name, "\(l.from) → \(loads[i].target)" + (l.service.isEmpty ? "" : " (\(l.service) via \(l.via))"), l.keepAlive ? "keep-alive" : "connect",
                    String(r.count), String(r.count - failed), String(failed), failureKinds(r).map { "\($0.0) \($0.1)" }.joined(separator: ", ").ifEmpty("-"),
                    String(format: "%.1f / %.1f / %.0f ms", t.p50, t.p99, t.max)]
        })
        let total = max(all.filter(\.ok).count, 1)
        out += "\n" + Status.table(["ENDPOINT", "ANSWERS", "SHARE"], shares(all).map { [$0.0, String($0.1), String(format: "%.1f%%", Double($0.1) * 100 / Double(total))] })
        out += "\nthe proxies (every node's and the load balancer's) retried \(retries) connects on another endpoint and replayed \(replays) connections whose endpoint ended before answering\n"
        if !actions.isEmpty {
            out += "\n" + Status.table(["AT", "ACTION", "FAILED", "SLOWEST", "ERRORS STOPPED", "GONE FROM PROXIES", "READY AGAIN"], actions.indices.map { i in
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

    func json() -> JSON {
        let loadsJSON: [JSON] = loads.indices.map { i in
            let r = requests[i], l = loads[i].load, t = Self.latencies(r)
            return ["name": .string(l.name), "p50Ms": .double(t.p50), "p99Ms": .double(t.p99), "maxMs": .double(t.max), "service": .string(l.service), "via": .string(l.via), "from": .string(l.from),
                    "target": .string(loads[i].target), "mode": .string(l.keepAlive ? "keep-alive" : "connect"),
                    "sent": .int(Int64(r.count)), "ok": .int(Int64(r.filter(\.ok).count)), "failed": .int(Int64(r.filter { !$0.ok }.count)),
                    "failures": .object(JSONObject(failureKinds(r).map { ($0.0, JSON.int(Int64($0.1))) })),
                    "endpoints": .object(JSONObject(shares(r).map { ($0.0, JSON.int(Int64($0.1))) }))]
        }
        let actionsJSON: [JSON] = actions.indices.map { i in
            let r = actions[i], a = adaptation(i)
            var o: JSON = ["at": .double(r.time - start), "line": .int(Int64(r.action.line)), "action": .string(r.action.description),
                           "failed": .int(Int64(a.failures)), "errorsStoppedMs": .double(a.errorsStoppedMs), "slowestMs": .double(a.slowestMs),
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
            .sorted { $0.1.milliseconds > $1.1.milliseconds }.prefix(10).map { load, r in
                ["load": .string(load), "at": .double(r.time - start), "ms": .double(r.milliseconds), "ok": .bool(r.ok), "detail": .string(r.detail)]
            }
        return ["experiment": .string(experiment.name), "file": .string(experiment.source), "start": .double(start), "slowest": .array(slowest),
                "durationSeconds": .double(experiment.duration), "loads": .array(loadsJSON), "proxyRetries": .int(Int64(retries)), "proxyReplays": .int(Int64(replays)),
                "actions": .array(actionsJSON), "undone": .array(healed.map { .string($0) }), "buckets": .array(bucketsJSON)]
    }

    func svg() -> String { TimelinePicture(report: self).svg() }
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

/// The report as a picture: requests per 100 ms (answered / failed) above, each endpoint's share
/// of the answers below, actions as marked vertical lines across both.
struct TimelinePicture {
    let report: ExperimentReport
    let width = 1000.0, left = 60.0, right = 20.0, panel = 170.0, gap = 50.0, top = 40.0
    static let palette = ["#4e79a7", "#f28e2b", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac", "#86bcb6"]

    func svg() -> String {
        let buckets = report.buckets
        let plotWidth = width - left - right
        let step = plotWidth / Double(buckets.count)
        let height = top + 2 * panel + gap + 60
        let peak = Double(max(buckets.map { $0.ok + $0.failed }.max() ?? 1, 1))
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"11\">\n"
        out += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        out += text(left, 20, "kemu experiment \(report.experiment.name): requests per 100 ms (answered, failed) and endpoint shares", size: 13)
        // Requests: answered (green) under failed (red).
        let base1 = top + panel
        for (i, b) in buckets.enumerated() {
            let x = left + Double(i) * step
            let okH = Double(b.ok) / peak * panel, failH = Double(b.failed) / peak * panel
            if b.ok > 0 { out += rect(x, base1 - okH, step, okH, "#59a14f") }
            if b.failed > 0 { out += rect(x, base1 - okH - failH, step, failH, "#e15759") }
        }
        out += axis(base1, label: "requests", peak: Int(peak))
        // Shares: each pod's fraction of the bucket's answers, stacked.
        let pods = report.shares(report.all).map(\.0).sorted()
        let color = Dictionary(uniqueKeysWithValues: pods.enumerated().map { ($1, Self.palette[$0 % Self.palette.count]) })
        let base2 = top + 2 * panel + gap
        for (i, b) in buckets.enumerated() where b.ok > 0 {
            var y = base2
            for pod in pods {
                guard let n = b.pods[pod] else { continue }
                let h = Double(n) / Double(b.ok) * panel
                y -= h
                out += rect(left + Double(i) * step, y, step, h, color[pod]!)
            }
        }
        out += axis(base2, label: "share", peak: nil)
        for (k, pod) in pods.enumerated() {
            let x = left + Double(k % 4) * 230, y = base2 + 35 + Double(k / 4) * 14
            out += rect(x, y - 9, 10, 10, color[pod]!) + text(x + 14, y, pod)
        }
        // Seconds along the bottom of both panels, actions across them.
        let seconds = Int(report.experiment.duration)
        for s in 0...max(seconds, 1) where Double(s) <= report.experiment.duration {
            let x = left + Double(s) / ExperimentReport.bucketSeconds * step
            out += text(x - 4, base1 + 14, "\(s)s") + text(x - 4, base2 + 14, "\(s)s")
        }
        for (i, a) in report.actions.enumerated() {
            let x = left + (a.time - report.start) / ExperimentReport.bucketSeconds * step
            out += "<line x1=\"\(f(x))\" y1=\"\(f(top - 6))\" x2=\"\(f(x))\" y2=\"\(f(base2))\" stroke=\"#333\" stroke-dasharray=\"4,3\"/>\n"
            out += text(x + 3, top + 4 + Double(i % 4) * 12, a.action.description)
        }
        return out + "</svg>\n"
    }

    private func axis(_ base: Double, label: String, peak: Int?) -> String {
        var out = "<line x1=\"\(f(left))\" y1=\"\(f(base))\" x2=\"\(f(width - right))\" y2=\"\(f(base))\" stroke=\"#999\"/>\n"
        out += "<line x1=\"\(f(left))\" y1=\"\(f(base - panel))\" x2=\"\(f(left))\" y2=\"\(f(base))\" stroke=\"#999\"/>\n"
        out += text(6, base - panel / 2, label)
        out += text(left - 30, base - panel + 8, peak.map(String.init) ?? "100%")
        return out
    }

    private func rect(_ x: Double, _ y: Double, _ w: Double, _ h: Double, _ fill: String) -> String {
        "<rect x=\"\(f(x))\" y=\"\(f(y))\" width=\"\(f(w))\" height=\"\(f(h))\" fill=\"\(fill)\"/>\n"
    }

    private func text(_ x: Double, _ y: Double, _ s: String, size: Int = 11) -> String {
        let escaped = s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
        return "<text x=\"\(f(x))\" y=\"\(f(y))\" font-size=\"\(size)\">\(escaped)</text>\n"
    }

    private func f(_ v: Double) -> String { String(format: "%.1f", v) }

    /// timeline.png beside the SVG when rsvg-convert is installed; its path, or nil.
    static func convert(_ svg: String) -> String? {
        guard let tool = ["/usr/bin/rsvg-convert", "/usr/local/bin/rsvg-convert"].first(where: FileSystem.exists) else { return nil }
        let png = String(svg.dropLast(4)) + ".png"
        guard let pid = try? Spawn.spawn([tool, "-o", png, svg], Spawn.Options()), (try? Spawn.wait(pid)) == .exited(0) else { return nil }
        return png
    }
}
