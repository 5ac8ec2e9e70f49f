import KemuAPI
import KemuIP
import KemuSystem

/// What the API server does to an object before storing it: fill in upstream's defaults and refuse
/// what upstream refuses, naming each field at fault (422 Invalid with causes).
enum Admission {
    static func admit(_ o: inout JSON, _ r: APIResource) throws {
        applyDefaults(&o, r)
        let errors = validate(o, r)
        if !errors.isEmpty { throw APIError.invalid(r, name: o.name, errors) }
    }

    // MARK: defaults

    static func applyDefaults(_ o: inout JSON, _ r: APIResource) {
        switch r.kind {
        case "Pod":
            defaultPodSpec(&o, at: ["spec"])
            if o["status"] == nil || o[path: "status.phase"] == nil { o["status", default: [:]]["phase"] = "Pending" }
        case "DaemonSet":
            var strategy = o[path: "spec.updateStrategy"] ?? [:]
            if strategy["type"] == nil { strategy["type"] = "RollingUpdate" }
            if strategy["type"]?.string == "RollingUpdate" {
                var rolling = strategy["rollingUpdate"] ?? [:]
                if rolling["maxUnavailable"] == nil { rolling["maxUnavailable"] = 1 }
                if rolling["maxSurge"] == nil { rolling["maxSurge"] = 0 }
                strategy["rollingUpdate"] = rolling
            }
            o["spec", default: [:]]["updateStrategy"] = strategy
            if o[path: "spec.revisionHistoryLimit"] == nil { o["spec", default: [:]]["revisionHistoryLimit"] = 10 }
            if o[path: "spec.template.spec"] != nil { defaultPodSpec(&o, at: ["spec", "template", "spec"]) }
        case "Deployment", "ReplicaSet", "StatefulSet", "ReplicationController":
            if o[path: "spec.replicas"] == nil { o["spec", default: [:]]["replicas"] = 1 }
            if r.kind == "ReplicationController", o[path: "spec.selector"] == nil, let labels = o[path: "spec.template.metadata.labels"] {
                o["spec", default: [:]]["selector"] = labels
            }
            if o[path: "spec.template.spec"] != nil { defaultPodSpec(&o, at: ["spec", "template", "spec"]) }
            if r.kind == "Deployment" {
                // Field by field, as upstream: `strategy: {}` (what `kubectl create deployment`
                // sends) is a RollingUpdate of 25 % / 25 %.
                var strategy = o[path: "spec.strategy"] ?? [:]
                if strategy["type"] == nil { strategy["type"] = "RollingUpdate" }
                if strategy["type"]?.string == "RollingUpdate" {
                    var rolling = strategy["rollingUpdate"] ?? [:]
                    if rolling["maxUnavailable"] == nil { rolling["maxUnavailable"] = "25%" }
                    if rolling["maxSurge"] == nil { rolling["maxSurge"] = "25%" }
                    strategy["rollingUpdate"] = rolling
                }
                o["spec", default: [:]]["strategy"] = strategy
                if o[path: "spec.revisionHistoryLimit"] == nil { o["spec", default: [:]]["revisionHistoryLimit"] = 10 }
                if o[path: "spec.progressDeadlineSeconds"] == nil { o["spec", default: [:]]["progressDeadlineSeconds"] = 600 }
            }
            if r.kind == "StatefulSet" {
                var strategy = o[path: "spec.updateStrategy"] ?? [:]
                if strategy["type"] == nil { strategy["type"] = "RollingUpdate" }
                if strategy["type"]?.string == "RollingUpdate" {
                    var rolling = strategy["rollingUpdate"] ?? [:]
                    if rolling["partition"] == nil { rolling["partition"] = 0 }
                    strategy["rollingUpdate"] = rolling
                }
                o["spec", default: [:]]["updateStrategy"] = strategy
                if o[path: "spec.podManagementPolicy"] == nil { o["spec", default: [:]]["podManagementPolicy"] = "OrderedReady" }
                if o[path: "spec.revisionHistoryLimit"] == nil { o["spec", default: [:]]["revisionHistoryLimit"] = 10 }
                if o[path: "spec.persistentVolumeClaimRetentionPolicy"] == nil {
                    o["spec", default: [:]]["persistentVolumeClaimRetentionPolicy"] = ["whenDeleted": "Retain", "whenScaled": "Retain"]
                }
            }
        case "Service":
            // Upstream's status of every Service: an empty loadBalancer until an ingress IP.
            if o[path: "status.loadBalancer"] == nil { o["status", default: [:]]["loadBalancer"] = [:] }
            if o[path: "spec.type"] == nil { o["spec", default: [:]]["type"] = "ClusterIP" }
            if o[path: "spec.sessionAffinity"] == nil { o["spec", default: [:]]["sessionAffinity"] = "None" }
            if var ports = o[path: "spec.ports"]?.array {
                for i in ports.indices {
                    if ports[i]["protocol"] == nil { ports[i]["protocol"] = "TCP" }
                    if ports[i]["targetPort"] == nil, let port = ports[i]["port"] { ports[i]["targetPort"] = port }
                }
                o["spec", default: [:]]["ports"] = .array(ports)
            }
        case "Namespace":
            if o[path: "status.phase"] == nil { o["status", default: [:]]["phase"] = "Active" }
        case "Secret": defaultSecret(&o)
        case "NetworkPolicy", "PriorityClass": defaultPolicyKinds(&o, r)
        case "Job", "CronJob": defaultBatch(&o, r)
        default: break
        }
    }

    static func defaultPodSpec(_ o: inout JSON, at path: [String]) {
        var spec = path.reduce(Optional(o)) { $0?[$1] } ?? [:]
        PodDefaults.apply(to: &spec)
        set(&o, path[...], spec)
    }

    static func set(_ o: inout JSON, _ path: ArraySlice<String>, _ value: JSON) {
        guard let first = path.first else { o = value; return }
        var child = o[first] ?? [:]
        set(&child, path.dropFirst(), value)
        o[first] = child
    }

    // MARK: validation

    static func validate(_ o: JSON, _ r: APIResource) -> [FieldError] {
        var errors: [FieldError] = []
        var name = o.name
        // A name the store will generate: the prefix is checked as part of a name, as upstream.
        if name.isEmpty, let prefix = o[path: "metadata.generateName"]?.string, !prefix.isEmpty { name = prefix + "x" }
        let labelName = ["Namespace", "Service"].contains(r.kind)
        if name.isEmpty {
            errors.append(.required("metadata.name"))
        } else if r.group == "rbac.authorization.k8s.io" {
            // RBAC names are path segments (`system:node-proxier`), as upstream's ValidateRBACName.
            if [".", ".."].contains(name) || name.contains("/") || name.contains("%") {
                errors.append(.invalid("metadata.name", "\"\(name)\"", "may not be '.' or '..' and may not contain '/' or '%'"))
            }
        } else if labelName ? !isDNSLabel(name) : !isDNSSubdomain(name) {
            errors.append(.invalid("metadata.name", "\"\(name)\"", labelName
                ? "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
                : "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"))
        }
        for (key, value) in o.labels {
            do { try validateKey(key); try validateValue(value) } catch let e as InputError {
                errors.append(.invalid("metadata.labels", "\"\(key)\"", e.message))
            } catch {}
        }
        switch r.kind {
        case "Pod": errors += validatePodSpec(o["spec"], at: "spec")
        case "Deployment", "ReplicaSet", "StatefulSet", "ReplicationController", "DaemonSet": errors += validateWorkload(o, r)
        case "Service": errors += validateService(o)
        case "Fault": errors += validateFault(o)
        case "CertificateSigningRequest": errors += validateCertificateRequest(o)
        case "Node": errors += validateNodeMeshAnnotations(o)
        case "AuthorizationPolicy", "PeerAuthentication": errors += validateMeshPolicy(o, r)
        case "TCPRoute", "HTTPRoute": errors += validateRoute(o)
        case "Role", "ClusterRole": errors += validateRules(o, r)
        case "RoleBinding", "ClusterRoleBinding": errors += validateBinding(o, r)
        case "ConfigMap": errors += validateConfigMap(o)
        case "Secret": errors += validateSecret(o)
        case "Job": errors += validateJobSpec(o["spec"], at: "spec")
        case "LimitRange": errors += validateLimitRange(o)
        case "CronJob": errors += validateCronJob(o)
        case "Ingress", "IngressClass", "NetworkPolicy", "PodDisruptionBudget", "PriorityClass", "ResourceQuota":
            errors += validatePolicyKinds(o, r)
        default: break
        }
        return errors
    }

    /// `claims`: a StatefulSet's volumeClaimTemplates, volumes of each of its pods.
    static func validatePodSpec(_ spec: JSON?, at path: String, claims: [String] = []) -> [FieldError] {
        guard let containers = spec?["containers"]?.array, !containers.isEmpty else { return [.required("\(path).containers")] }
        var errors: [FieldError] = []
        if let policy = spec?["restartPolicy"], !["Always", "OnFailure", "Never"].contains(policy.string ?? "") {
            errors.append(FieldError(field: "\(path).restartPolicy", reason: "FieldValueNotSupported",
                                     message: "Unsupported value: \(policy.text()): supported values: \"Always\", \"OnFailure\", \"Never\""))
        }
        if let node = spec?["nodeName"], node != .null, !isDNSSubdomain(node.string ?? "") || node.string == "" {
            errors.append(.invalid("\(path).nodeName", node.text(), "a lowercase RFC 1123 subdomain (a node's name)"))
        }
        errors += validateIDs(spec?["securityContext"], at: "\(path).securityContext", keys: ["runAsUser", "runAsGroup", "fsGroup"])
        for (j, group) in (spec?[path: "securityContext.supplementalGroups"]?.array ?? []).enumerated() {
            errors += validateIDs(["id": group], at: "\(path).securityContext.supplementalGroups[\(j)]", keys: ["id"], bare: true)
        }
        errors += validateVolumes(spec, at: path, claims: claims)
        var names: Set<String> = []
        for (i, c) in containers.enumerated() {
            let at = "\(path).containers[\(i)]"
            errors += validateIDs(c["securityContext"], at: "\(at).securityContext", keys: ["runAsUser", "runAsGroup"])
            if let n = c["name"]?.string, !n.isEmpty {
                if !isDNSLabel(n) { errors.append(.invalid("\(at).name", "\"\(n)\"", "a lowercase RFC 1123 label")) }
                if !names.insert(n).inserted { errors.append(FieldError(field: "\(at).name", reason: "FieldValueDuplicate", message: "Duplicate value: \"\(n)\"")) }
            } else {
                errors.append(.required("\(at).name"))
            }
            if (c["image"]?.string ?? "").isEmpty && c["command"] == nil { errors.append(.required("\(at).image")) }
            for (j, p) in (c["ports"]?.array ?? []).enumerated() {
                if let port = p["containerPort"]?.int, !(1...65535).contains(port) {
                    errors.append(.invalid("\(at).ports[\(j)].containerPort", "\(port)", "must be between 1 and 65535, inclusive"))
                }
            }
        }
        return errors
    }

    /// User and group ids: integers from 0 to 2147483647, as upstream's.
    static func validateIDs(_ context: JSON?, at path: String, keys: [String], bare: Bool = false) -> [FieldError] {
        keys.compactMap { key in
            guard let value = context?[key], value != .null else { return nil }
            if let n = value.int, (0...Int64(Int32.max)).contains(n) { return nil }
            return .invalid(bare ? path : "\(path).\(key)", value.text(), "must be between 0 and 2147483647, inclusive")
        }
    }

    /// `spec.replicas` of a workload or a Scale: an int32 from 0 (null, when not `required`, is
    /// left to defaulting), and no more than the machine runs.
    static func validateReplicas(_ value: JSON, required: Bool = false, field: String = "spec.replicas") -> [FieldError] {
        if let replicas = value.int, replicas < 0 {
            return [.invalid(field, "\(replicas)", "must be greater than or equal to 0")]
        }
        if value == .null && required { return [.invalid(field, "null", "must be greater than or equal to 0")] }
        if value.int.map({ $0 > Int64(Int32.max) }) ?? (value != .null) {
            return [.invalid(field, value.text(), "must be a whole number from 0 to \(Int32.max) (int32)")]
        }
        // Not upstream's rule: one machine runs every pod, and a workload it cannot hold would
        // flood the store and the scheduler with pods that can never run.
        if let replicas = value.int, let problem = MachineBudget.current.replicasProblem(replicas) {
            return [.invalid(field, "\(replicas)", problem)]
        }
        return []
    }

    static func validateWorkload(_ o: JSON, _ r: APIResource) -> [FieldError] {
        var errors = o[path: "spec.replicas"].map { validateReplicas($0) } ?? []
        let templateLabels = o.object.map { _ in JSON.stringMap(o[path: "spec.template.metadata.labels"]) } ?? [:]
        if r.kind == "ReplicationController" {
            let selector = JSON.stringMap(o[path: "spec.selector"])
            if !selector.isEmpty, !LabelSelector(matchLabels: selector).matches(templateLabels) {
                errors.append(.invalid("spec.template.metadata.labels", "\(templateLabels)", "`selector` does not match template `labels`"))
            }
        } else if o[path: "spec.selector"] == nil {
            errors.append(.required("spec.selector"))
        } else {
            do {
                let selector = try LabelSelector(json: o[path: "spec.selector"])
                if selector.isEmpty { errors.append(.invalid("spec.selector", "{}", "empty selector is invalid for \(r.kind.lowercased())")) }
                else if !selector.matches(templateLabels) {
                    errors.append(.invalid("spec.template.metadata.labels", "\(templateLabels)", "`selector` does not match template `labels`"))
                }
            } catch let e as InputError {
                errors.append(.invalid("spec.selector", o[path: "spec.selector"]!.text(), e.message))
            } catch {}
        }
        if o[path: "spec.template"] != nil || r.kind != "ReplicationController" {
            let claims = (o[path: "spec.volumeClaimTemplates"]?.array ?? []).compactMap { $0[path: "metadata.name"]?.string }
            errors += validatePodSpec(o[path: "spec.template.spec"], at: "spec.template.spec", claims: claims)
        }
        // Workload pods run until deleted: upstream allows only Always.
        if let policy = o[path: "spec.template.spec.restartPolicy"]?.string, policy != "Always" {
            errors.append(FieldError(field: "spec.template.spec.restartPolicy", reason: "FieldValueNotSupported",
                                     message: "Unsupported value: \"\(policy)\": supported values: \"Always\""))
        }
        if r.kind == "DaemonSet" { errors += validateDaemonSetStrategy(o) }
        if r.kind == "Deployment", o[path: "spec.strategy.type"]?.string == "RollingUpdate" {
            let surge = o[path: "spec.strategy.rollingUpdate.maxSurge"], unavailable = o[path: "spec.strategy.rollingUpdate.maxUnavailable"]
            if isZero(surge) && isZero(unavailable) {
                errors.append(.invalid("spec.strategy.rollingUpdate.maxUnavailable", "0", "may not be 0 when `maxSurge` is 0"))
            }
        }
        if r.kind == "StatefulSet" {
            // An empty serviceName is allowed, as upstream; the controller says (an event) that
            // the pods then have no stable DNS names.
            let policy = o[path: "spec.podManagementPolicy"]?.string ?? "OrderedReady"
            if !["OrderedReady", "Parallel"].contains(policy) {
                errors.append(FieldError(field: "spec.podManagementPolicy", reason: "FieldValueNotSupported",
                                         message: "Unsupported value: \"\(policy)\": supported values: \"OrderedReady\", \"Parallel\""))
            }
            let strategy = o[path: "spec.updateStrategy.type"]?.string ?? "RollingUpdate"
            if !["RollingUpdate", "OnDelete"].contains(strategy) {
                errors.append(FieldError(field: "spec.updateStrategy.type", reason: "FieldValueNotSupported",
                                         message: "Unsupported value: \"\(strategy)\": supported values: \"OnDelete\", \"RollingUpdate\""))
            }
            if let partition = o[path: "spec.updateStrategy.rollingUpdate.partition"]?.int, partition < 0 {
                errors.append(.invalid("spec.updateStrategy.rollingUpdate.partition", "\(partition)", "must be greater than or equal to 0"))
            }
            for (i, claim) in (o[path: "spec.volumeClaimTemplates"]?.array ?? []).enumerated() {
                let name = claim[path: "metadata.name"]?.string ?? ""
                if name.isEmpty { errors.append(.required("spec.volumeClaimTemplates[\(i)].metadata.name")) }
                else if !isDNSLabel(name) { errors.append(.invalid("spec.volumeClaimTemplates[\(i)].metadata.name", "\"\(name)\"", "a lowercase RFC 1123 label")) }
            }
        }
        return errors
    }

    static func isZero(_ v: JSON?) -> Bool { v?.int == 0 || v?.string == "0" || v?.string == "0%" }

    static func validateService(_ o: JSON) -> [FieldError] {
        var errors: [FieldError] = []
        let type = o[path: "spec.type"]?.string ?? "ClusterIP"
        if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(type) {
            errors.append(FieldError(field: "spec.type", reason: "FieldValueNotSupported",
                                     message: "Unsupported value: \"\(type)\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""))
        }
        let ports = o[path: "spec.ports"]?.array ?? []
        if ports.isEmpty && type != "ExternalName" && o[path: "spec.clusterIP"]?.string != "None" { errors.append(.required("spec.ports")) }
        var names: Set<String> = []
        var seen: Set<String> = []
        for (i, p) in ports.enumerated() {
            if let port = p["port"]?.int {
                if !(1...65535).contains(port) { errors.append(.invalid("spec.ports[\(i)].port", "\(port)", "must be between 1 and 65535, inclusive")) }
            } else {
                errors.append(.required("spec.ports[\(i)].port"))
            }
            let at = "spec.ports[\(i)]"
            let proto = p["protocol"]?.string ?? "TCP"
            if proto == "SCTP" {
                // Accepted upstream; kemu's node proxies carry no SCTP (nor does this kernel, as
                // a rule: Debian's loads no sctp module), so a Service of it would be silently dead.
                errors.append(FieldError(field: "\(at).protocol", reason: "FieldValueNotSupported",
                                         message: "Unsupported value: \"SCTP\": kemu's node proxies do not carry SCTP; supported values: \"TCP\", \"UDP\""))
            } else if !["TCP", "UDP"].contains(proto) {
                errors.append(FieldError(field: "\(at).protocol", reason: "FieldValueNotSupported",
                                         message: "Unsupported value: \(p["protocol"]?.text() ?? "null"): supported values: \"SCTP\", \"TCP\", \"UDP\""))
            }
            if let port = p["port"]?.int, !seen.insert("\(port)/\(proto)").inserted {
                errors.append(FieldError(field: "\(at)", reason: "FieldValueDuplicate", message: "Duplicate value: {port: \(port), protocol: \(proto)}"))
            }
            if let target = p["targetPort"] {
                if let n = target.int {
                    if !(1...65535).contains(n) { errors.append(.invalid("\(at).targetPort", "\(n)", "must be between 1 and 65535, inclusive")) }
                } else if let name = target.string {
                    if !isPortName(name) { errors.append(.invalid("\(at).targetPort", "\"\(name)\"", "must be a port number or an IANA_SVC_NAME (at most 15 lower-case letters, digits and '-', with a letter)")) }
                } else {
                    errors.append(.invalid("\(at).targetPort", target.text(), "must be a port number or a port name"))
                }
            }
            if let nodePort = p["nodePort"], nodePort != .null, nodePort.int == nil {
                errors.append(.invalid("\(at).nodePort", nodePort.text(), "must be a port number"))
            }
            if ports.count > 1 && (p["name"]?.string ?? "").isEmpty { errors.append(.required("spec.ports[\(i)].name")) }
            if let n = p["name"]?.string, !n.isEmpty, !names.insert(n).inserted {
                errors.append(FieldError(field: "spec.ports[\(i)].name", reason: "FieldValueDuplicate", message: "Duplicate value: \"\(n)\""))
            }
        }
        for (i, ip) in (o[path: "spec.externalIPs"]?.array ?? []).enumerated() where IPv4Address(ip.string ?? "") == nil {
            errors.append(.invalid("spec.externalIPs[\(i)]", ip.text(), "must be a valid IP address, (e.g. 10.9.8.7)"))
        }
        return errors
    }

    /// IANA_SVC_NAME: 1-15 lower-case letters, digits and '-', at least one letter, no '--', not at either end.
    static func isPortName(_ s: String) -> Bool {
        guard (1...15).contains(s.count), s.first != "-", s.last != "-", !s.contains("--") else { return false }
        return s.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-") } && s.contains { $0.isLetter }
    }

    static func isDNSLabel(_ s: String) -> Bool {
        guard (1...63).contains(s.count), let f = s.first, let l = s.last else { return false }
        let ok: (Character) -> Bool = { $0.isASCII && ($0.isLowercase || $0.isNumber) }
        return ok(f) && ok(l) && s.allSatisfy { ok($0) || $0 == "-" }
    }

    static func isDNSSubdomain(_ s: String) -> Bool {
        s.count <= 253 && s.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { isDNSLabel(String($0)) }
    }
}
