import KemuAPI
import KemuIP
import KemuStore
import Synchronization

/// Where Services get their addresses and ports.
public struct ServiceRanges: Sendable {
    public var serviceCIDR: IPv4Network
    public var nodePorts: ClosedRange<Int>
    /// nil: LoadBalancer Services stay pending.
    public var loadBalancerPool: IPv4Network?

    public init(serviceCIDR: IPv4Network = IPv4Network("10.96.0.0/16")!, nodePorts: ClosedRange<Int> = 30000...32767,
                loadBalancerPool: IPv4Network? = IPv4Network("172.31.1.0/24")) {
        self.serviceCIDR = serviceCIDR
        self.nodePorts = nodePorts
        self.loadBalancerPool = loadBalancerPool
    }
}

/// ClusterIPs, NodePorts and LoadBalancer IPs, handed out at create and taken back at delete.
/// Requested values are honoured when free and in range (else 422). Dynamic choices avoid the
/// lower "static" band that users pick from by hand (KEP-3070 for IPs, KEP-3668 for ports), and
/// fall back to it when the rest is full. Rebuilt from the stored Services at start.
final class ServiceAllocator: Sendable {
    let ranges: ServiceRanges
    struct Taken { var ips: Set<UInt32> = [], ports: Set<Int> = [], lbIPs: Set<UInt32> = [] }
    private let used = Mutex(Taken())

    init(_ ranges: ServiceRanges, existing: [JSON]) {
        self.ranges = ranges
        for service in existing { record(service) }
    }

    private func record(_ service: JSON) { used.withLock { Self.add(service, to: &$0) } }

    static func add(_ service: JSON, to u: inout Taken) {
        for ip in clusterIPs(service) { u.ips.insert(ip.value) }
        for port in nodePorts(service) { u.ports.insert(port) }
        for ip in loadBalancerIPs(service) { u.lbIPs.insert(ip.value) }
    }

    static func remove(_ service: JSON, from u: inout Taken) {
        for ip in clusterIPs(service) { u.ips.remove(ip.value) }
        for port in nodePorts(service) { u.ports.remove(port) }
        for ip in loadBalancerIPs(service) { u.lbIPs.remove(ip.value) }
    }

    /// Fills in spec.clusterIP(s), node ports and the LB ingress of a new Service; returns the
    /// fields at fault (and takes nothing) when a request cannot be met.
    func allocate(_ service: inout JSON) -> [FieldError] {
        used.withLock { u in
            var taken = u
            let errors = assign(&service, &taken)
            if errors.isEmpty && !Store.dryRun { u = taken }  // a dry run shows what it would take
            return errors
        }
    }

    /// An update: `old`'s values count as free for `new` (so it keeps its own), in one step.
    func reallocate(_ service: inout JSON, replacing old: JSON) -> [FieldError] {
        Self.dropNodePorts(&service, keptFrom: old)
        return used.withLock { u in
            var taken = u
            Self.remove(old, from: &taken)
            let errors = assign(&service, &taken)
            if errors.isEmpty && !Store.dryRun { u = taken }  // a dry run shows what it would take
            return errors
        }
    }

    /// A Service changed to a type without node ports keeps none of those it had (upstream's
    /// dropTypeDependentFields): a client that only changed the type sends the old ones back.
    static func dropNodePorts(_ service: inout JSON, keptFrom old: JSON) {
        let type = service[path: "spec.type"]?.string ?? "ClusterIP"
        guard type == "ClusterIP" || type == "ExternalName", var ports = service[path: "spec.ports"]?.array else { return }
        let before = Set((old[path: "spec.ports"]?.array ?? []).compactMap { $0["nodePort"]?.int })
        for i in ports.indices where ports[i]["nodePort"]?.int.map(before.contains) == true { ports[i]["nodePort"] = nil }
        service["spec", default: [:]]["ports"] = .array(ports)
    }

    private func assign(_ service: inout JSON, _ taken: inout Taken) -> [FieldError] {
        let type = service[path: "spec.type"]?.string ?? "ClusterIP"
        if type == "ClusterIP" || type == "ExternalName" {
            let asked = (service[path: "spec.ports"]?.array ?? []).enumerated().filter { ($0.element["nodePort"]?.int ?? 0) != 0 }
            if !asked.isEmpty {
                return asked.map { FieldError(field: "spec.ports[\($0.offset)].nodePort", reason: "FieldValueForbidden",
                                              message: "Forbidden: may not be used when `type` is '\(type)'") }
            }
        }
        if type == "ExternalName" { return [] }
        var errors: [FieldError] = []
        do {
            // ClusterIP
            let requested = service[path: "spec.clusterIP"]?.string ?? ""
            if requested == "None" {
                service["spec", default: [:]]["clusterIPs"] = ["None"]
            } else {
                var ip: IPv4Address?
                if !requested.isEmpty {
                    if let wanted = IPv4Address(requested), ranges.serviceCIDR.contains(wanted), wanted != ranges.serviceCIDR.address, wanted != ranges.serviceCIDR.last {
                        if taken.ips.contains(wanted.value) {
                            errors.append(.invalid("spec.clusterIPs", "[]string{\"\(requested)\"}", "failed to allocate IP \(requested): provided IP is already allocated"))
                        } else { ip = wanted }
                    } else {
                        errors.append(.invalid("spec.clusterIPs", "[]string{\"\(requested)\"}", "failed to allocate IP \(requested): the provided IP (\(requested)) is not in the valid range. The range of valid IPs is \(ranges.serviceCIDR)"))
                    }
                } else if let free = Self.pick(ranges.serviceCIDR, taken.ips) {
                    ip = free
                } else {
                    errors.append(FieldError(field: "spec.clusterIPs", reason: "FieldValueInvalid", message: "failed to allocate a serviceIP: range is full"))
                }
                if let ip {
                    taken.ips.insert(ip.value)
                    service["spec", default: [:]]["clusterIP"] = .string(ip.description)
                    service["spec", default: [:]]["clusterIPs"] = [.string(ip.description)]
                }
            }
            // NodePorts
            if type == "NodePort" || type == "LoadBalancer", var ports = service[path: "spec.ports"]?.array {
                // As upstream: one node port may serve a port number over TCP and UDP (DNS's 53)
                // of the same Service, never one protocol twice.
                var shared: [Int: (protocols: Set<String>, port: Int64?)] = [:]
                for i in ports.indices {
                    let proto = ports[i]["protocol"]?.string ?? "TCP"
                    let number = ports[i]["port"]?.int
                    if let wanted = ports[i]["nodePort"]?.int.map(Int.init), wanted != 0 {
                        if !ranges.nodePorts.contains(wanted) {
                            errors.append(.invalid("spec.ports[\(i)].nodePort", "\(wanted)", "provided port is not in the valid range. The range of valid ports is \(ranges.nodePorts.lowerBound)-\(ranges.nodePorts.upperBound)"))
                        } else if let mine = shared[wanted] {
                            if mine.protocols.contains(proto) {
                                errors.append(FieldError(field: "spec.ports[\(i)].nodePort", reason: "FieldValueDuplicate", message: "Duplicate value: \(wanted)"))
                            }
                            shared[wanted]?.protocols.insert(proto)
                        } else if taken.ports.contains(wanted) {
                            errors.append(.invalid("spec.ports[\(i)].nodePort", "\(wanted)", "provided port is already allocated"))
                        } else {
                            taken.ports.insert(wanted)
                            shared[wanted] = ([proto], number)
                        }
                    } else if let same = shared.first(where: { $0.value.port == number && !$0.value.protocols.contains(proto) }) {
                        ports[i]["nodePort"] = .int(Int64(same.key))
                        shared[same.key]?.protocols.insert(proto)
                    } else if let port = Self.pickPort(ranges.nodePorts, taken.ports) {
                        taken.ports.insert(port)
                        shared[port] = ([proto], number)
                        ports[i]["nodePort"] = .int(Int64(port))
                    } else {
                        errors.append(FieldError(field: "spec.ports[\(i)].nodePort", reason: "FieldValueInvalid", message: "failed to allocate a nodePort: range is full"))
                    }
                }
                service["spec", default: [:]]["ports"] = .array(ports)
            }
            // healthCheckNodePort: a LoadBalancer Service with externalTrafficPolicy Local gets one
            // (the port every node's proxy answers on, 200 while it has a local endpoint).
            if type == "LoadBalancer", service[path: "spec.externalTrafficPolicy"]?.string == "Local" {
                if let wanted = service[path: "spec.healthCheckNodePort"]?.int.map(Int.init), wanted != 0 {
                    if !ranges.nodePorts.contains(wanted) {
                        errors.append(.invalid("spec.healthCheckNodePort", "\(wanted)", "provided port is not in the valid range. The range of valid ports is \(ranges.nodePorts.lowerBound)-\(ranges.nodePorts.upperBound)"))
                    } else if taken.ports.contains(wanted) {
                        errors.append(.invalid("spec.healthCheckNodePort", "\(wanted)", "provided port is already allocated"))
                    } else {
                        taken.ports.insert(wanted)
                    }
                } else if let port = Self.pickPort(ranges.nodePorts, taken.ports) {
                    taken.ports.insert(port)
                    service["spec", default: [:]]["healthCheckNodePort"] = .int(Int64(port))
                } else {
                    errors.append(FieldError(field: "spec.healthCheckNodePort", reason: "FieldValueInvalid", message: "failed to allocate a nodePort: range is full"))
                }
            } else if service[path: "spec.healthCheckNodePort"] != nil {
                service["spec", default: [:]]["healthCheckNodePort"] = nil  // no longer Local: upstream drops it too
            }
            // LoadBalancer IP: pending (no ingress) when the pool is full.
            if type == "LoadBalancer", let pool = ranges.loadBalancerPool, Self.loadBalancerIPs(service).isEmpty,
               let ip = Self.pick(pool, taken.lbIPs, staticBand: false) {
                taken.lbIPs.insert(ip.value)
                service["status", default: [:]]["loadBalancer"] = ["ingress": [["ip": .string(ip.description), "ipMode": "VIP"]]]
            }
        }
        return errors
    }

    func release(_ service: JSON) { used.withLock { Self.remove(service, from: &$0) } }

    var counts: (ips: Int, ports: Int, lbIPs: Int) { used.withLock { ($0.ips.count, $0.ports.count, $0.lbIPs.count) } }

    /// KEP-3070: the lowest min(max(16, size/16), 256) addresses are the static band; network and
    /// broadcast addresses are never handed out.
    static func pick(_ cidr: IPv4Network, _ taken: Set<UInt32>, staticBand: Bool = true) -> IPv4Address? {
        let size = Int(cidr.size)
        guard size > 2 else { return nil }
        let band = staticBand ? min(max(16, size / 16), 256) : 0
        let offset = firstFree(above: band, in: 1...(size - 2)) { !taken.contains(cidr.host(UInt32($0))!.value) }
        return offset.map { cidr.host(UInt32($0))! }
    }

    /// KEP-3668: the lowest min(max(16, size/32), 128) ports are the static band.
    static func pickPort(_ range: ClosedRange<Int>, _ taken: Set<Int>) -> Int? {
        let band = min(max(16, range.count / 32), 128)
        return firstFree(above: range.lowerBound + band - 1, in: range) { !taken.contains($0) }
    }

    /// A free value from a random starting point in the part of `range` above `band` (the
    /// dynamic band), else in the rest (the static band), without listing the candidates.
    static func firstFree(above band: Int, in range: ClosedRange<Int>, _ free: (Int) -> Bool) -> Int? {
        let split = min(max(band + 1, range.lowerBound), range.upperBound + 1)
        for part in [split..<(range.upperBound + 1), range.lowerBound..<split] where !part.isEmpty {
            let start = Int.random(in: 0..<part.count)
            for k in 0..<part.count {
                let candidate = part.lowerBound + (start + k) % part.count
                if free(candidate) { return candidate }
            }
        }
        return nil
    }

    static func clusterIPs(_ s: JSON) -> [IPv4Address] {
        ((s[path: "spec.clusterIPs"]?.array ?? []).compactMap(\.string) + [s[path: "spec.clusterIP"]?.string ?? ""])
            .compactMap { IPv4Address($0) }.reduce(into: []) { if !$0.contains($1) { $0.append($1) } }
    }

    static func nodePorts(_ s: JSON) -> [Int] {
        ((s[path: "spec.ports"]?.array ?? []).compactMap { $0["nodePort"]?.int } + [s[path: "spec.healthCheckNodePort"]?.int ?? 0])
            .map(Int.init).filter { $0 != 0 }
    }

    static func loadBalancerIPs(_ s: JSON) -> [IPv4Address] {
        (s[path: "status.loadBalancer.ingress"]?.array ?? []).compactMap { $0["ip"]?.string }.compactMap { IPv4Address($0) }
    }
}
