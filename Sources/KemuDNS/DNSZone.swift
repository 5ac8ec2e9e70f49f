import KemuAPI
import KemuIP

/// The cluster's names, as Kubernetes' DNS specification gives them, from Services and their
/// EndpointSlices: `svc.ns.svc.DOMAIN` (A to the ClusterIP; to every ready endpoint for a
/// headless Service; CNAME for ExternalName), `_port._proto.svc.ns.svc.DOMAIN` (SRV per named
/// port), `host.svc.ns.svc.DOMAIN` for headless endpoints with a hostname (StatefulSet pods),
/// `a-b-c-d.ns.pod.DOMAIN`, and PTR records for ClusterIPs and named endpoints. Kept per Service,
/// so a change re-derives one Service's names only.
public struct DNSZone: Sendable {
    public let domain: String
    public var ttl: UInt32
    private var names: [String: [DNSMessage.RecordData]] = [:]
    private var byService: [String: [(String, DNSMessage.RecordData)]] = [:]
    /// How many names with records lie under each name (`default.svc.cluster.local`: every
    /// Service of the namespace), so "exists without records" is one lookup.
    private var descendants: [String: Int] = [:]

    public init(domain: String = "cluster.local", ttl: UInt32 = 5) {
        self.domain = domain.lowercased()
        self.ttl = ttl
    }

    /// Replaces the records of one Service (nil: it is gone).
    public mutating func set(service key: String, _ service: JSON?, slices: [JSON]) {
        set(service: key, names: service.map(ServiceNames.init), slices: slices.map(SliceNames.init))
    }

    public mutating func set(service key: String, names service: ServiceNames?, slices: [SliceNames]) {
        for (name, data) in byService.removeValue(forKey: key) ?? [] {
            names[name]?.removeAll { $0 == data }
            if names[name]?.isEmpty == true {
                names[name] = nil
                for parent in Self.ancestors(name) {
                    descendants[parent, default: 1] -= 1
                    if descendants[parent] == 0 { descendants[parent] = nil }
                }
            }
        }
        guard let service else { return }
        let records = Self.records(service, slices: slices, domain: domain)
        byService[key] = records
        for (name, data) in records where !(names[name]?.contains(data) ?? false) {
            if names[name] == nil { for parent in Self.ancestors(name) { descendants[parent, default: 0] += 1 } }
            names[name, default: []].append(data)
        }
    }

    /// `a.b.c` → `b.c`, `c`.
    static func ancestors(_ name: String) -> [String] {
        var out: [String] = []
        var rest = Substring(name)
        while let dot = rest.firstIndex(of: ".") {
            rest = rest[rest.index(after: dot)...]
            out.append(String(rest))
        }
        return out
    }

    static func records(_ service: ServiceNames, slices: [SliceNames], domain: String) -> [(String, DNSMessage.RecordData)] {
        let base = "\(service.name).\(service.namespace).svc.\(domain)".lowercased()
        var out: [(String, DNSMessage.RecordData)] = []
        if let target = service.externalName {
            return [(base, .cname(target.lowercased()))]
        }
        if let ip = IPv4Address(service.clusterIP) {
            out.append((base, .a(ip)))
            out.append((reverse(ip), .ptr(base)))
            for p in service.ports { out.append(("_\(p.name)._\(p.proto).\(base)", .srv(priority: 0, weight: 100, port: p.port, target: base))) }
            return out
        }
        guard service.clusterIP == "None" else { return [] }
        // Headless: every ready endpoint (publishNotReadyAddresses makes them all ready).
        for slice in slices {
            for e in slice.endpoints where e.ready {
                for ip in e.addresses {
                    out.append((base, .a(ip)))
                    let host = (e.hostname ?? ip.description.replacingOccurrences(of: ".", with: "-")).lowercased()
                    let named = "\(host).\(base)"
                    out.append((named, .a(ip)))
                    if e.hostname != nil { out.append((reverse(ip), .ptr(named))) }
                    for p in slice.ports { out.append(("_\(p.name)._\(p.proto).\(base)", .srv(priority: 0, weight: 100, port: p.port, target: named))) }
                }
            }
        }
        return out
    }

    static func reverse(_ ip: IPv4Address) -> String {
        ip.octets.reversed().map(String.init).joined(separator: ".") + ".in-addr.arpa"
    }

    /// The reply to a query.
    public func answer(_ query: DNSMessage) -> DNSMessage {
        guard query.opcode == 0 else { return .reply(to: query, code: .notImplemented) }
        guard query.questions.count == 1, let q = query.questions.first else { return .reply(to: query, code: .formatError) }
        guard q.dnsClass == 1 || q.dnsClass == 255 else { return .reply(to: query, code: .notImplemented) }
        let inZone = q.name == domain || q.name.hasSuffix("." + domain)
        guard inZone || q.name.hasSuffix(".in-addr.arpa") else { return .reply(to: query, code: .refused) }
        let data = names[q.name] ?? podRecord(q.name).map { [$0] } ?? []
        if data.isEmpty {
            // A name with nothing under it is NXDOMAIN; the zone's own inner names (the domain,
            // svc.DOMAIN, NS.svc.DOMAIN) exist but hold no records here.
            return .reply(to: query, code: exists(q.name) ? .noError : .nameError)
        }
        let wanted: [DNSMessage.RecordData]
        if case .cname = data[0], q.type != DNSMessage.RecordType.cname.rawValue {
            wanted = [data[0]]
        } else {
            wanted = data.filter { q.type == DNSMessage.RecordType.any.rawValue || $0.type.rawValue == q.type }
        }
        return .reply(to: query, code: .noError, answers: wanted.map { DNSMessage.Record(name: q.name, ttl: ttl, data: $0) })
    }

    /// `a-b-c-d.NAMESPACE.pod.DOMAIN` → A a.b.c.d.
    func podRecord(_ name: String) -> DNSMessage.RecordData? {
        let suffix = ".pod." + domain
        guard name.hasSuffix(suffix) else { return nil }
        let parts = name.dropLast(suffix.count).split(separator: ".")
        guard parts.count == 2, let ip = IPv4Address(parts[0].replacingOccurrences(of: "-", with: ".")) else { return nil }
        return .a(ip)
    }

    func exists(_ name: String) -> Bool {
        name == domain || name == "svc.\(domain)" || name == "pod.\(domain)" || descendants[name] != nil
    }
}
