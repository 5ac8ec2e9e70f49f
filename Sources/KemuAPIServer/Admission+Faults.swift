import KemuAPI
import KemuIP

/// kemu's Fault objects: what each may ask of the node proxies, and no two overlapping on one Service.
extension Admission {
    static func validateFault(_ o: JSON) -> [FieldError] {
        guard let spec = o["spec"]?.object else { return [.required("spec")] }
        var errors: [FieldError] = []
        for key in spec.keys.sorted() where !Fault.specFields.contains(key) {
            errors.append(FieldError(field: "spec.\(key)", reason: "FieldValueNotSupported",
                                     message: "unknown field; a Fault's spec has \(Fault.specFields.joined(separator: ", "))"))
        }
        let service = spec["service"]?.string ?? ""
        if service.isEmpty { errors.append(.required("spec.service")) } else if !isDNSLabel(service) {
            errors.append(.invalid("spec.service", "\"\(service)\"", "not a Service name"))
        }
        for (i, source) in (spec["sources"]?.array ?? []).enumerated() where IPv4Network(source.string ?? "") == nil {
            errors.append(.invalid("spec.sources[\(i)]", source.text(), "not an IPv4 CIDR (like 10.244.1.0/24)"))
        }
        if !["latency", "abort", "hang", "bandwidth"].contains(where: { spec[$0] != nil }) {
            errors.append(.invalid("spec", "{}", "a Fault needs at least one of latency, abort, hang, bandwidth"))
        }
        let int = { (path: String, max: Int64) -> Int64? in
            guard let v = o[path: path] else { return nil }
            guard let n = v.int, (0...max).contains(n) else {
                errors.append(.invalid(path, v.text(), "must be a whole number from 0 to \(max)"))
                return nil
            }
            return n
        }
        let latency = int("spec.latency.milliseconds", 60_000)
        if let jitter = int("spec.latency.jitterMilliseconds", 60_000), jitter > (latency ?? 0) {
            errors.append(.invalid("spec.latency.jitterMilliseconds", String(jitter), "must not exceed spec.latency.milliseconds (\(latency ?? 0))"))
        }
        var percents: [Double] = []
        for kind in ["abort", "hang"] where spec[kind] != nil {
            let path = "spec.\(kind).percent"
            guard let p = Fault.number(o[path: path]), (0...100).contains(p), o[path: path]?.string == nil else {
                errors.append(o[path: path] == nil ? .required(path) : .invalid(path, o[path: path]!.text(), "must be a number from 0 to 100"))
                continue
            }
            percents.append(p)
        }
        if percents.count == 2, percents.reduce(0, +) > 100 {
            errors.append(.invalid("spec.hang.percent", Fault.percent(percents[1]), "abort and hang add up to more than 100%"))
        }
        if spec["bandwidth"] != nil, Fault.parseRate(o[path: "spec.bandwidth.rate"]?.string ?? "") == nil {
            errors.append(.invalid("spec.bandwidth.rate", o[path: "spec.bandwidth.rate"]?.text() ?? "null",
                                   "a rate such as 1mbit, 500kbit or 100kbps (tc's units)"))
        }
        return errors
    }

    /// Two Faults on one Service for the same clients would contradict each other: refused,
    /// naming the Fault already there.
    static func faultOverlaps(_ o: JSON, _ others: [JSON]) -> FieldError? {
        let mine = Fault(o)
        let ranges = { (f: Fault) in f.sources.isEmpty ? [IPv4Network.any] : f.sources.compactMap { IPv4Network($0) } }
        for other in others.map(Fault.init) where other.name != mine.name && other.service == mine.service {
            guard ranges(mine).contains(where: { a in ranges(other).contains { a.overlaps($0) } }) else { continue }
            return .invalid("spec.sources", mine.sources.isEmpty ? "(every client)" : mine.sources.joined(separator: ","),
                            "overlaps Fault \"\(other.name)\" on Service \(mine.service) (its sources: \(other.sources.isEmpty ? "every client" : other.sources.joined(separator: ","))); put both in one Fault or make their sources disjoint")
        }
        return nil
    }
}
