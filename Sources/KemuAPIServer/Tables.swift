import Foundation
import Hummingbird
import KemuAPI
import KemuStore

/// Server-side `meta.k8s.io/v1` Tables: the columns `kubectl get` prints (reference §5).
enum Tables {
    static func wanted(_ request: Request) -> Bool {
        request.headers[.accept]?.contains("as=Table") == true
    }

    struct Column: Sendable {
        var name: String
        var type = "string"
        var wide = false
        var value: @Sendable (JSON) -> JSON
    }

    static func table(_ items: [JSON], _ r: APIResource, revision: Int64, includeObject: String?, headers: Bool = true) -> JSON {
        let cols = columns(r)
        var table: JSON = ["kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": ["resourceVersion": .string(String(revision))]]
        if headers {
            table["columnDefinitions"] = .array(cols.map { c in
                ["name": .string(c.name), "type": .string(c.type), "format": c.name == "Name" ? "name" : "",
                 "description": .string(c.name), "priority": .int(c.wide ? 1 : 0)]
            })
        }
        table["rows"] = .array(items.map { o in
            var row: JSON = ["cells": .array(cols.map { $0.value(o) })]
            switch includeObject {
            case "None": break
            case "Object": row["object"] = o
            default: row["object"] = ["kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"] ?? [:]]
            }
            return row
        })
        return table
    }

    static func s(_ v: String?) -> JSON { .string(v ?? "<none>") }
    static func n(_ v: Int64?) -> JSON { .int(v ?? 0) }
    static let name = Column(name: "Name") { .string($0.name) }
    static let age = Column(name: "Age") { .string(Age.of($0[path: "metadata.creationTimestamp"]?.string)) }

    static func columns(_ r: APIResource) -> [Column] {
        switch r.kind {
        case "Pod":
            return [name,
                    Column(name: "Ready") { o in
                        let statuses = o[path: "status.containerStatuses"]?.array ?? []
                        let total = o[path: "spec.containers"]?.array?.count ?? 0
                        return .string("\(statuses.filter { $0["ready"]?.bool == true }.count)/\(total)")
                    },
                    Column(name: "Status") { o in .string(podStatus(o)) },
                    Column(name: "Restarts", type: "integer") { o in
                        .int((o[path: "status.containerStatuses"]?.array ?? []).reduce(0) { $0 + ($1["restartCount"]?.int ?? 0) })
                    },
                    age,
                    Column(name: "IP", wide: true) { s($0[path: "status.podIP"]?.string) },
                    Column(name: "Node", wide: true) { s($0[path: "spec.nodeName"]?.string) },
                    Column(name: "Nominated Node", wide: true) { s($0[path: "status.nominatedNodeName"]?.string) },
                    Column(name: "Readiness Gates", wide: true) { _ in "<none>" }]
        case "Service":
            return [name,
                    Column(name: "Type") { s($0[path: "spec.type"]?.string) },
                    Column(name: "Cluster-IP") { s($0[path: "spec.clusterIP"]?.string) },
                    Column(name: "External-IP") { o in
                        if o[path: "spec.type"]?.string == "ExternalName" { return s(o[path: "spec.externalName"]?.string) }
                        let ips = (o[path: "status.loadBalancer.ingress"]?.array ?? []).compactMap { $0["ip"]?.string }
                            + (o[path: "spec.externalIPs"]?.array ?? []).compactMap(\.string)
                        if !ips.isEmpty { return .string(ips.joined(separator: ",")) }
                        return o[path: "spec.type"]?.string == "LoadBalancer" ? "<pending>" : "<none>"
                    },
                    Column(name: "Port(s)") { o in
                        let ports = (o[path: "spec.ports"]?.array ?? []).map { p in
                            let node = p["nodePort"]?.int.map { ":\($0)" } ?? ""
                            return "\(p["port"]?.int ?? 0)\(node)/\(p["protocol"]?.string ?? "TCP")"
                        }
                        return .string(ports.isEmpty ? "<none>" : ports.joined(separator: ","))
                    },
                    age,
                    Column(name: "Selector", wide: true) { o in
                        let sel = LabelSelector(matchLabels: JSON.stringMap(o[path: "spec.selector"])).description
                        return .string(sel.isEmpty ? "<none>" : sel)
                    }]
        case "Deployment":
            return [name,
                    Column(name: "Ready") { o in .string("\(o[path: "status.readyReplicas"]?.int ?? 0)/\(o[path: "spec.replicas"]?.int ?? 0)") },
                    Column(name: "Up-to-date", type: "integer") { n($0[path: "status.updatedReplicas"]?.int) },
                    Column(name: "Available", type: "integer") { n($0[path: "status.availableReplicas"]?.int) },
                    age] + workloadWide
        case "ReplicaSet", "ReplicationController":
            return [name,
                    Column(name: "Desired", type: "integer") { n($0[path: "spec.replicas"]?.int) },
                    Column(name: "Current", type: "integer") { n($0[path: "status.replicas"]?.int) },
                    Column(name: "Ready", type: "integer") { n($0[path: "status.readyReplicas"]?.int) },
                    age] + workloadWide
        case "StatefulSet":
            return [name,
                    Column(name: "Ready") { o in .string("\(o[path: "status.readyReplicas"]?.int ?? 0)/\(o[path: "spec.replicas"]?.int ?? 0)") },
                    age] + workloadWide.dropLast()
        case "DaemonSet":
            return [name,
                    Column(name: "Desired", type: "integer") { n($0[path: "status.desiredNumberScheduled"]?.int) },
                    Column(name: "Current", type: "integer") { n($0[path: "status.currentNumberScheduled"]?.int) },
                    Column(name: "Ready", type: "integer") { n($0[path: "status.numberReady"]?.int) },
                    Column(name: "Up-to-date", type: "integer") { n($0[path: "status.updatedNumberScheduled"]?.int) },
                    Column(name: "Available", type: "integer") { n($0[path: "status.numberAvailable"]?.int) },
                    Column(name: "Node Selector") { o in
                        let selector = JSON.stringMap(o[path: "spec.template.spec.nodeSelector"]).sorted { $0.key < $1.key }
                        return .string(selector.isEmpty ? "<none>" : selector.map { "\($0.key)=\($0.value)" }.joined(separator: ","))
                    },
                    age] + workloadWide
        case "LimitRange":
            return [name, Column(name: "Created At") { s($0[path: "metadata.creationTimestamp"]?.string) }]
        case "ResourceQuota":
            // kubectl's: `pods: 1/10, requests.cpu: 500m/2` (REQUEST), the limits.* ones (LIMIT).
            return [name, age, Column(name: "Request") { quotaUsage($0, limits: false) }, Column(name: "Limit") { quotaUsage($0, limits: true) }]
        case "CronJob":
            return [name,
                    Column(name: "Schedule") { s($0[path: "spec.schedule"]?.string) },
                    Column(name: "Timezone") { s($0[path: "spec.timeZone"]?.string) },
                    Column(name: "Suspend") { .string($0[path: "spec.suspend"]?.bool == true ? "True" : "False") },
                    Column(name: "Active", type: "integer") { .int(Int64($0[path: "status.active"]?.array?.count ?? 0)) },
                    Column(name: "Last Schedule") { o in
                        o[path: "status.lastScheduleTime"]?.string.map { .string(Age.of($0)) } ?? "<none>"
                    },
                    age,
                    Column(name: "Containers", wide: true) { o in
                        .string((o[path: "spec.jobTemplate.spec.template.spec.containers"]?.array ?? []).compactMap { $0["name"]?.string }
                            .joined(separator: ","))
                    },
                    Column(name: "Images", wide: true) { o in
                        .string((o[path: "spec.jobTemplate.spec.template.spec.containers"]?.array ?? []).compactMap { $0["image"]?.string }
                            .joined(separator: ","))
                    },
                    Column(name: "Selector", wide: true) { o in
                        let selector = (try? LabelSelector(json: o[path: "spec.jobTemplate.spec.selector"]))?.description ?? ""
                        return .string(selector.isEmpty ? "<none>" : selector)
                    }]
        case "Namespace":
            return [name, Column(name: "Status") { s($0[path: "status.phase"]?.string) }, age]
        case "Node":
            return [name,
                    Column(name: "Status") { o in
                        let ready = (o[path: "status.conditions"]?.array ?? []).first { $0["type"]?.string == "Ready" }
                        var status = ready?["status"]?.string == "True" ? "Ready" : "NotReady"
                        if o[path: "spec.unschedulable"]?.bool == true { status += ",SchedulingDisabled" }
                        return .string(status)
                    },
                    Column(name: "Roles") { o in
                        let roles = o.labels.keys.filter { $0.hasPrefix("node-role.kubernetes.io/") }.map { String($0.dropFirst(24)) }.sorted()
                        return .string(roles.isEmpty ? "<none>" : roles.joined(separator: ","))
                    },
                    age,
                    Column(name: "Version") { s($0[path: "status.nodeInfo.kubeletVersion"]?.string) },
                    Column(name: "Internal-IP", wide: true) { o in
                        s((o[path: "status.addresses"]?.array ?? []).first { $0["type"]?.string == "InternalIP" }?["address"]?.string)
                    },
                    Column(name: "External-IP", wide: true) { _ in "<none>" },
                    Column(name: "OS-Image", wide: true) { s($0[path: "status.nodeInfo.osImage"]?.string) },
                    Column(name: "Kernel-Version", wide: true) { s($0[path: "status.nodeInfo.kernelVersion"]?.string) },
                    Column(name: "Container-Runtime", wide: true) { s($0[path: "status.nodeInfo.containerRuntimeVersion"]?.string) }]
        case "EndpointSlice":
            return [name,
                    Column(name: "AddressType") { s($0["addressType"]?.string) },
                    Column(name: "Ports") { o in
                        let ports = (o["ports"]?.array ?? []).compactMap { $0["port"]?.int }.map(String.init)
                        return .string(ports.isEmpty ? "<unset>" : ports.joined(separator: ","))
                    },
                    Column(name: "Endpoints") { o in
                        let ips = (o["endpoints"]?.array ?? []).flatMap { $0["addresses"]?.array ?? [] }.compactMap(\.string)
                        return .string(ips.isEmpty ? "<unset>" : ips.prefix(3).joined(separator: ",") + (ips.count > 3 ? " + \(ips.count - 3) more..." : ""))
                    },
                    age]
        case "Endpoints":
            return [name,
                    Column(name: "Endpoints") { o in
                        let pairs = (o["subsets"]?.array ?? []).flatMap { subset in
                            (subset["addresses"]?.array ?? []).compactMap { $0["ip"]?.string }.flatMap { ip in
                                (subset["ports"]?.array ?? []).compactMap { $0["port"]?.int }.map { "\(ip):\($0)" }
                            }
                        }
                        return .string(pairs.isEmpty ? "<none>" : pairs.prefix(3).joined(separator: ",") + (pairs.count > 3 ? " + \(pairs.count - 3) more..." : ""))
                    },
                    age]
        case "Event":
            return [Column(name: "Last Seen") { o in .string(Age.of(o["lastTimestamp"]?.string ?? o["eventTime"]?.string ?? o[path: "metadata.creationTimestamp"]?.string)) },
                    Column(name: "Type") { s($0["type"]?.string) },
                    Column(name: "Reason") { s($0["reason"]?.string) },
                    Column(name: "Object") { o in .string("\((o[path: "involvedObject.kind"]?.string ?? "").lowercased())/\(o[path: "involvedObject.name"]?.string ?? "")") },
                    Column(name: "Message") { s($0["message"]?.string) }]
        case "Fault":
            return [name,
                    Column(name: "Service") { s($0[path: "spec.service"]?.string) },
                    Column(name: "Faults") { .string(Fault($0).summary) },
                    Column(name: "Sources") { o in .string(Fault(o).sources.isEmpty ? "<all>" : Fault(o).sources.joined(separator: ",")) },
                    age]
        case "AuthorizationPolicy":
            return [name, Column(name: "Action") { o in .string(o[path: "spec.action"]?.string ?? "ALLOW") }, age]
        case "TCPRoute", "HTTPRoute":
            return [name,
                    Column(name: "Parents") { o in
                        .string((o[path: "spec.parentRefs"]?.array ?? []).compactMap { $0["name"]?.string }.joined(separator: ","))
                    },
                    Column(name: "Backends") { o in .string(TrafficRoute.summary(o)) },
                    age]
        case "PeerAuthentication":
            return [name, Column(name: "Mode") { o in .string(o[path: "spec.mtls.mode"]?.string ?? "UNSET") }, age]
        case "CertificateSigningRequest":
            return [name, age,
                    Column(name: "SignerName") { s($0[path: "spec.signerName"]?.string) },
                    Column(name: "Requestor") { s($0[path: "spec.username"]?.string) },
                    Column(name: "RequestedDuration") { o in .string(o[path: "spec.expirationSeconds"]?.int.map { Age.human(Int(clamping: $0)) } ?? "<none>") },
                    Column(name: "Condition") { o in
                        var conditions = (o[path: "status.conditions"]?.array ?? []).compactMap { $0["type"]?.string }
                        if conditions.isEmpty { conditions = ["Pending"] }
                        if o[path: "status.certificate"] != nil { conditions.append("Issued") }
                        return .string(conditions.joined(separator: ","))
                    }]
        case "ConfigMap":
            return [name, Column(name: "Data", type: "integer") { o in
                .int(Int64((o["data"]?.object?.count ?? 0) + (o["binaryData"]?.object?.count ?? 0)))
            }, age]
        case "Job":
            return [name,
                    Column(name: "Status") { o in
                        let conditions = (o[path: "status.conditions"]?.array ?? []).filter { $0["status"]?.string == "True" }
                        if conditions.contains(where: { $0["type"]?.string == "Failed" }) { return "Failed" }
                        if conditions.contains(where: { $0["type"]?.string == "Complete" }) { return "Complete" }
                        if o[path: "spec.suspend"]?.bool == true { return "Suspended" }
                        return "Running"
                    },
                    Column(name: "Completions") { o in
                        let done = o[path: "status.succeeded"]?.int ?? 0
                        return .string(o[path: "spec.completions"]?.int.map { "\(done)/\($0)" } ?? "\(done)/1 of \(o[path: "spec.parallelism"]?.int ?? 1)")
                    },
                    Column(name: "Duration") { o in
                        guard let start = o[path: "status.startTime"]?.string.flatMap(Timestamp.parse) else { return "" }
                        let end = o[path: "status.completionTime"]?.string.flatMap(Timestamp.parse) ?? Date()
                        return .string(Age.human(max(0, Int(end.timeIntervalSince(start)))))
                    }, age]
        case "Ingress":
            return [name, Column(name: "Class") { s($0[path: "spec.ingressClassName"]?.string) },
                    Column(name: "Hosts") { o in
                        let hosts = (o[path: "spec.rules"]?.array ?? []).map { $0["host"]?.string ?? "*" }
                        return .string(hosts.isEmpty ? "*" : hosts.joined(separator: ","))
                    },
                    Column(name: "Address") { o in
                        .string((o[path: "status.loadBalancer.ingress"]?.array ?? []).compactMap { $0["ip"]?.string ?? $0["hostname"]?.string }.joined(separator: ","))
                    },
                    Column(name: "Ports") { .string(($0[path: "spec.tls"]?.array ?? []).isEmpty ? "80" : "80, 443") }, age]
        case "IngressClass":
            return [name, Column(name: "Controller") { s($0[path: "spec.controller"]?.string) },
                    Column(name: "Parameters") { o in
                        guard let p = o[path: "spec.parameters"] else { return "<none>" }
                        return .string("\(p["kind"]?.string ?? "")/\(p["name"]?.string ?? "")")
                    }, age]
        case "NetworkPolicy":
            return [name, Column(name: "Pod-Selector") { o in
                let labels = JSON.stringMap(o[path: "spec.podSelector.matchLabels"])
                return .string(labels.isEmpty ? "<none>" : labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ","))
            }, age]
        case "PodDisruptionBudget":
            return [name, Column(name: "Min Available") { o in .string(o[path: "spec.minAvailable"].map { $0.string ?? $0.text() } ?? "N/A") },
                    Column(name: "Max Unavailable") { o in .string(o[path: "spec.maxUnavailable"].map { $0.string ?? $0.text() } ?? "N/A") },
                    Column(name: "Allowed Disruptions", type: "integer") { .int($0[path: "status.disruptionsAllowed"]?.int ?? 0) }, age]
        case "PriorityClass":
            return [name, Column(name: "Value", type: "integer") { .int($0["value"]?.int ?? 0) },
                    Column(name: "Global-Default") { .string($0["globalDefault"]?.bool == true ? "true" : "false") }, age,
                    Column(name: "PreemptionPolicy") { s($0["preemptionPolicy"]?.string) }]
        case "Secret":
            return [name, Column(name: "Type") { s($0["type"]?.string) },
                    Column(name: "Data", type: "integer") { .int(Int64($0["data"]?.object?.count ?? 0)) }, age]
        default:
            return [name, Column(name: "Created At", type: "date") { s($0[path: "metadata.creationTimestamp"]?.string) }]
        }
    }

    static func quotaUsage(_ o: JSON, limits: Bool) -> JSON {
        let hard = o[path: "status.hard"]?.object ?? o[path: "spec.hard"]?.object ?? JSONObject()
        return .string(hard.keys.filter { $0.hasPrefix("limits.") == limits }.sorted().map { name in
            "\(name): \(o[path: "status.used"]?[name]?.string ?? "0")/\(hard[name]?.string ?? hard[name]?.text() ?? "")"
        }.joined(separator: ", "))
    }

    static let workloadWide: [Column] = [
        Column(name: "Containers", wide: true) { o in
            .string((o[path: "spec.template.spec.containers"]?.array ?? []).compactMap { $0["name"]?.string }.joined(separator: ","))
        },
        Column(name: "Images", wide: true) { o in
            .string((o[path: "spec.template.spec.containers"]?.array ?? []).compactMap { $0["image"]?.string }.joined(separator: ","))
        },
        Column(name: "Selector", wide: true) { o in
            if let s = try? LabelSelector(json: o[path: "spec.selector"]), o[path: "spec.selector.matchLabels"] != nil || o[path: "spec.selector.matchExpressions"] != nil {
                return .string(s.description)
            }
            return .string(LabelSelector(matchLabels: JSON.stringMap(o[path: "spec.selector"])).description)
        },
    ]

    /// kubectl's STATUS column: Terminating, a waiting reason (CrashLoopBackOff, ErrImagePull), or the phase.
    static func podStatus(_ o: JSON) -> String {
        if o.deletionTimestamp != nil { return "Terminating" }
        if let reason = o[path: "status.reason"]?.string { return reason }
        // Init containers first, as kubectl prints them: Init:1/2, Init:Error, Init:CrashLoopBackOff.
        let inits = o[path: "status.initContainerStatuses"]?.array ?? []
        for (i, c) in inits.enumerated() {
            if let terminated = c[path: "state.terminated"] {
                if terminated["exitCode"]?.int == 0 { continue }
                if let reason = terminated["reason"]?.string, !reason.isEmpty { return "Init:\(reason)" }
                return "Init:ExitCode:\(terminated["exitCode"]?.int ?? 0)"
            }
            if c["started"]?.bool == true, c[path: "state.running"] != nil,
               (o[path: "spec.initContainers"]?.array ?? []).first(where: { $0["name"] == c["name"] })?["restartPolicy"]?.string == "Always" {
                continue  // a sidecar, running
            }
            if let reason = c[path: "state.waiting.reason"]?.string, !reason.isEmpty, reason != "PodInitializing" { return "Init:\(reason)" }
            return "Init:\(i)/\((o[path: "spec.initContainers"]?.array ?? inits).count)"
        }
        for c in o[path: "status.containerStatuses"]?.array ?? [] {
            if let reason = c[path: "state.waiting.reason"]?.string, !reason.isEmpty { return reason }
            if let reason = c[path: "state.terminated.reason"]?.string, o[path: "status.phase"]?.string != "Succeeded" { return reason }
        }
        return o[path: "status.phase"]?.string ?? "Pending"
    }
}

/// Ages the way kubectl prints them (`59s`, `5m10s`, `3h`, `2d4h`).
enum Age {
    static func of(_ timestamp: String?, now: Date = Date()) -> String {
        guard let timestamp, let date = Timestamp.parse(timestamp) else { return "<unknown>" }
        return human(Int(now.timeIntervalSince(date)))
    }

    static func human(_ seconds: Int) -> String {
        if seconds < -1 { return "<invalid>" }
        if seconds < 0 { return "0s" }
        if seconds < 120 { return "\(seconds)s" }
        let minutes = seconds / 60
        if minutes < 10 { return seconds % 60 == 0 ? "\(minutes)m" : "\(minutes)m\(seconds % 60)s" }
        if minutes < 180 { return "\(minutes)m" }
        let hours = minutes / 60
        if hours < 8 { return minutes % 60 == 0 ? "\(hours)h" : "\(hours)h\(minutes % 60)m" }
        if hours < 48 { return "\(hours)h" }
        if hours < 192 { return hours % 24 == 0 ? "\(hours / 24)d" : "\(hours / 24)d\(hours % 24)h" }
        if hours < 24 * 365 * 2 { return "\(hours / 24)d" }
        return "\(hours / 24 / 365)y"
    }
}
