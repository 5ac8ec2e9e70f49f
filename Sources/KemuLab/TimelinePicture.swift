import KemuSystem

/// The report as a picture: requests per 100 ms (answered / failed) above, each endpoint's share
/// of the answers below, actions as marked vertical lines across both.
public struct TimelinePicture {
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
    public static func convert(_ svg: String) -> String? {
        guard let tool = ["/usr/bin/rsvg-convert", "/usr/local/bin/rsvg-convert"].first(where: FileSystem.exists) else { return nil }
        let png = String(svg.dropLast(4)) + ".png"
        guard let pid = try? Spawn.spawn([tool, "-o", png, svg], Spawn.Options()), (try? Spawn.wait(pid)) == .exited(0) else { return nil }
        return png
    }
}
