import Foundation
import KemuAPI

/// batch/v1 (and the LimitRange and DaemonSet-strategy checks beside them): Jobs and CronJobs, defaulted and validated as upstream does (a CronJob's
/// `jobTemplate.spec` as a Job's spec, so a CronJob that admits makes Jobs that do).
extension Admission {
    static func defaultBatch(_ o: inout JSON, _ r: APIResource) {
        if r.kind == "Job" {
            defaultJobSpec(&o, at: ["spec"])
            return
        }
        var spec = o["spec"] ?? [:]
        if spec["concurrencyPolicy"] == nil { spec["concurrencyPolicy"] = "Allow" }
        if spec["suspend"] == nil { spec["suspend"] = false }
        if spec["successfulJobsHistoryLimit"] == nil { spec["successfulJobsHistoryLimit"] = 3 }
        if spec["failedJobsHistoryLimit"] == nil { spec["failedJobsHistoryLimit"] = 1 }
        o["spec"] = spec
        if o[path: "spec.jobTemplate.spec"] != nil { defaultJobSpec(&o, at: ["spec", "jobTemplate", "spec"]) }
    }

    static func defaultJobSpec(_ o: inout JSON, at path: [String]) {
        var spec = path.reduce(Optional(o)) { $0?[$1] } ?? [:]
        if spec["completions"] == nil && spec["parallelism"] == nil { spec["completions"] = 1 }
        if spec["parallelism"] == nil { spec["parallelism"] = 1 }
        if spec["backoffLimit"] == nil { spec["backoffLimit"] = 6 }
        if spec["completionMode"] == nil { spec["completionMode"] = "NonIndexed" }
        if spec["suspend"] == nil { spec["suspend"] = false }
        if spec["podReplacementPolicy"] == nil { spec["podReplacementPolicy"] = "TerminatingOrFailed" }
        set(&o, path[...], spec)
        if spec[path: "template.spec"] != nil { defaultPodSpec(&o, at: path + ["template", "spec"]) }
    }

    /// A Job's spec at `path` (`spec`, or a CronJob's `spec.jobTemplate.spec`): counts that are
    /// not negative, a restart policy that lets pods finish, the pod spec.
    static func validateJobSpec(_ spec: JSON?, at path: String) -> [FieldError] {
        var errors = validatePodSpec(spec?[path: "template.spec"], at: "\(path).template.spec")
        // Pods running at once: what the machine holds, as for a workload's replicas.
        if let parallelism = spec?["parallelism"] { errors += validateReplicas(parallelism, field: "\(path).parallelism") }
        for field in ["completions", "backoffLimit", "ttlSecondsAfterFinished"] {
            if let v = spec?[field], !(v.int.map { (0...Int64(Int32.max)).contains($0) } ?? false) {
                errors.append(.invalid("\(path).\(field)", v.text(), "must be greater than or equal to 0"))
            }
        }
        if let v = spec?["activeDeadlineSeconds"] {
            if (v.int ?? 0) <= 0 {
                errors.append(.invalid("\(path).activeDeadlineSeconds", v.text(), "must be greater than 0"))
            } else if let n = v.int, n > 1 << 40 {
                errors.append(.invalid("\(path).activeDeadlineSeconds", "\(n)", "must be at most \(Int64(1) << 40) seconds"))
            }
        }
        let policy = spec?[path: "template.spec.restartPolicy"]?.string ?? ""
        if !["OnFailure", "Never"].contains(policy) {
            errors.append(notSupported("\(path).template.spec.restartPolicy", policy, ["OnFailure", "Never"]))
        }
        if let mode = spec?["completionMode"]?.string, !["NonIndexed", "Indexed"].contains(mode) {
            errors.append(notSupported("\(path).completionMode", mode, ["Indexed", "NonIndexed"]))
        }
        if let policy = spec?["podFailurePolicy"] {
            if !["Never", ""].contains(spec?[path: "template.spec.restartPolicy"]?.string ?? "") {
                errors.append(.invalid("\(path).template.spec.restartPolicy", spec?[path: "template.spec.restartPolicy"]?.text() ?? "",
                                       "only \"Never\" is supported when podFailurePolicy is specified"))
            }
            for (i, rule) in (policy["rules"]?.array ?? []).enumerated() {
                let at = "\(path).podFailurePolicy.rules[\(i)]"
                let action = rule["action"]?.string ?? ""
                if !["FailJob", "Ignore", "Count"].contains(action) {
                    errors.append(notSupported("\(at).action", action, ["Count", "FailJob", "Ignore"]))
                }
                if (rule["onExitCodes"] == nil) == (rule["onPodConditions"] == nil) {
                    errors.append(.invalid(at, rule.text(), "specifying one of onExitCodes and onPodConditions is required"))
                }
                if let codes = rule["onExitCodes"] {
                    if !["In", "NotIn"].contains(codes["operator"]?.string ?? "") {
                        errors.append(notSupported("\(at).onExitCodes.operator", codes["operator"]?.string ?? "", ["In", "NotIn"]))
                    }
                    if (codes["values"]?.array ?? []).isEmpty { errors.append(.required("\(at).onExitCodes.values")) }
                }
            }
        }
        // Per-index back-off and success policies are not honoured yet: refused rather than ignored.
        for field in ["backoffLimitPerIndex", "maxFailedIndexes", "successPolicy"] where spec?[field] != nil {
            errors.append(FieldError(field: "\(path).\(field)", reason: "FieldValueForbidden",
                                     message: "Forbidden: kemu does not honour \(field) yet; leave it out (upstream's default applies)"))
        }
        if spec?["completionMode"]?.string == "Indexed" {
            if spec?["completions"] == nil { errors.append(.required("\(path).completions")) }
            if let n = spec?["completions"]?.int, n > 100_000 {
                errors.append(.invalid("\(path).completions", "\(n)", "must be less than or equal to 100000 when completion mode is Indexed"))
            }
        }
        if let selector = spec?["selector"], spec?["manualSelector"]?.bool == true,
           (try? LabelSelector(json: selector))?.matches(JSON.stringMap(spec?[path: "template.metadata.labels"])) != true {
            errors.append(.invalid("\(path).template.metadata.labels", spec?[path: "template.metadata.labels"]?.text() ?? "{}",
                                   "`selector` does not match template `labels`"))
        }
        return errors
    }

    /// A CronJob: a schedule that parses, a time zone the machine knows, a name short enough for
    /// the Jobs named after it (upstream's 52 characters), and a job template that admits as a Job.
    static func validateCronJob(_ o: JSON) -> [FieldError] {
        var errors: [FieldError] = []
        if o.name.count > 52 { errors.append(.invalid("metadata.name", "\"\(o.name)\"", "must be no more than 52 characters")) }
        if let schedule = o[path: "spec.schedule"]?.string, !schedule.isEmpty {
            do { _ = try CronSchedule(schedule) } catch {
                errors.append(.invalid("spec.schedule", "\"\(schedule)\"", error.description))
            }
        } else {
            errors.append(.required("spec.schedule"))
        }
        if let zone = o[path: "spec.timeZone"] {
            let name = zone.string ?? ""
            if name.isEmpty || name.lowercased() == "local" || TimeZone(identifier: name) == nil {
                errors.append(.invalid("spec.timeZone", zone.text(), "unknown time zone \(name)"))
            }
        }
        let policy = o[path: "spec.concurrencyPolicy"]?.string ?? ""
        if !["Allow", "Forbid", "Replace"].contains(policy) {
            errors.append(notSupported("spec.concurrencyPolicy", policy, ["Allow", "Forbid", "Replace"]))
        }
        for field in ["startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"] {
            if let v = o[path: "spec.\(field)"], !(v.int.map { (0...Int64(Int32.max)).contains($0) } ?? false) {
                errors.append(.invalid("spec.\(field)", v.text(), "must be greater than or equal to 0"))
            }
        }
        if o[path: "spec.jobTemplate"] == nil {
            errors.append(.required("spec.jobTemplate"))
        } else {
            errors += validateJobSpec(o[path: "spec.jobTemplate.spec"], at: "spec.jobTemplate.spec")
        }
        return errors
    }

    /// A LimitRange: known types, quantities that parse, min no more than max.
    static func validateLimitRange(_ o: JSON) -> [FieldError] {
        var errors: [FieldError] = []
        for (i, item) in (o[path: "spec.limits"]?.array ?? []).enumerated() {
            let at = "spec.limits[\(i)]"
            let type = item["type"]?.string ?? ""
            if !["Container", "Pod", "PersistentVolumeClaim"].contains(type) {
                errors.append(notSupported("\(at).type", type, ["Container", "PersistentVolumeClaim", "Pod"]))
            }
            for field in ["max", "min", "default", "defaultRequest", "maxLimitRequestRatio"] {
                for (name, value) in item[field]?.object ?? JSONObject() where Quantity.milli(value) == nil {
                    errors.append(.invalid("\(at).\(field)[\(name)]", value.text(), "must be a quantity such as 500m or 1Gi"))
                }
            }
            for (name, low) in item["min"]?.object ?? JSONObject() {
                if let high = item["max"]?[name], let l = Quantity.milli(low), let h = Quantity.milli(high), l > h {
                    errors.append(.invalid("\(at).min[\(name)]", low.text(), "min value \(low.string ?? "") is greater than max value \(high.string ?? "")"))
                }
            }
        }
        return errors
    }

    /// A DaemonSet's update strategy: a known type, maxSurge and maxUnavailable not both 0.
    static func validateDaemonSetStrategy(_ o: JSON) -> [FieldError] {
        var errors: [FieldError] = []
        let strategy = o[path: "spec.updateStrategy.type"]?.string ?? "RollingUpdate"
        if !["RollingUpdate", "OnDelete"].contains(strategy) {
            errors.append(FieldError(field: "spec.updateStrategy.type", reason: "FieldValueNotSupported",
                                     message: "Unsupported value: \"\(strategy)\": supported values: \"OnDelete\", \"RollingUpdate\""))
        }
        let surge = o[path: "spec.updateStrategy.rollingUpdate.maxSurge"]
        let unavailable = o[path: "spec.updateStrategy.rollingUpdate.maxUnavailable"]
        if strategy == "RollingUpdate", isZero(surge) && isZero(unavailable) {
            errors.append(.invalid("spec.updateStrategy.rollingUpdate.maxUnavailable", "0", "may not be 0 when `maxSurge` is 0"))
        }
        for (field, value) in [("maxSurge", surge), ("maxUnavailable", unavailable)] {
            if let value { errors += intOrPercent(value, at: "spec.updateStrategy.rollingUpdate.\(field)") }
        }
        return errors
    }
}
