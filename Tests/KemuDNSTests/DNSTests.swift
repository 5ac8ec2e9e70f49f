import KemuAPI
import KemuClient
import KemuSystem
import KemuIP
import KemuTestSupport
import Testing

@testable import KemuDNS

@Suite struct DNSTests {
    /// A query as `dig web.default.svc.cluster.local A` sends it (with RD set).
    static func query(_ name: String, type: UInt16 = 1, id: UInt16 = 0x1234) -> [UInt8] {
        var bytes: [UInt8] = [UInt8(id >> 8), UInt8(id & 0xff), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]
        for label in name.split(separator: ".") { bytes.append(UInt8(label.utf8.count)); bytes += Array(label.utf8) }
        bytes += [0, UInt8(type >> 8), UInt8(type & 0xff), 0, 1]
        return bytes
    }

    static func service(_ name: String, clusterIP: String, ports: JSON = [["name": "http", "port": 80, "protocol": "TCP"]], type: String = "ClusterIP",
                        extra: [String: JSON] = [:]) -> JSON {
        var spec: JSON = ["type": .string(type), "clusterIP": .string(clusterIP), "ports": ports]
        for (k, v) in extra { spec[k] = v }
        var s: JSON = ["spec": spec]
        s.name = name
        s.namespace = "default"
        return s
    }

    static func zone() -> DNSZone {
        var z = DNSZone(domain: "cluster.local", ttl: 5)
        z.set(service: "default/web", service("web", clusterIP: "10.96.0.20"), slices: [])
        let slice: JSON = ["ports": [["name": "peer", "port": 2380, "protocol": "TCP"]],
                           "endpoints": [["addresses": ["10.244.1.5"], "hostname": "db-0", "conditions": ["ready": true]],
                                         ["addresses": ["10.244.2.6"], "hostname": "db-1", "conditions": ["ready": true]],
                                         ["addresses": ["10.244.2.7"], "conditions": ["ready": false]]]]
        z.set(service: "default/db", service("db", clusterIP: "None", ports: [["name": "peer", "port": 2380]]), slices: [slice])
        z.set(service: "default/ext", service("ext", clusterIP: "", type: "ExternalName", extra: ["externalName": "Example.COM"]), slices: [])
        return z
    }

    func ask(_ zone: DNSZone, _ name: String, type: UInt16 = 1) throws -> DNSMessage {
        zone.answer(try DNSMessage.parse(Self.query(name, type: type)))
    }

    @Test func anAQueryGetsTheClusterIPInTheWireFormat() throws {
        let reply = try ask(Self.zone(), "web.default.svc.cluster.local").bytes()
        let q = Self.query("web.default.svc.cluster.local")
        // Header: same id; QR AA RD set, RCODE 0; one question, one answer.
        #expect(Array(reply[0..<12]) == [0x12, 0x34, 0x85, 0x00, 0, 1, 0, 1, 0, 0, 0, 0])
        // The question echoed, then the answer: the name, type A, class IN, TTL 5, 4 bytes.
        #expect(Array(reply[12..<q.count]) == Array(q[12...]))
        let answer = Array(reply[q.count...])
        #expect(Array(answer.suffix(14)) == [0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 96, 0, 20])
    }

    @Test func namesFollowTheKubernetesSpecification() throws {
        let z = Self.zone()
        #expect(try ask(z, "WEB.default.svc.cluster.local").answers.map(\.data) == [.a(IPv4Address("10.96.0.20")!)])
        #expect(try ask(z, "_http._tcp.web.default.svc.cluster.local", type: 33).answers.map(\.data)
                == [.srv(priority: 0, weight: 100, port: 80, target: "web.default.svc.cluster.local")])
        #expect(try ask(z, "20.0.96.10.in-addr.arpa", type: 12).answers.map(\.data) == [.ptr("web.default.svc.cluster.local")])
        // Headless: one A per ready endpoint; StatefulSet-style hostnames; SRV per endpoint.
        #expect(Set(try ask(z, "db.default.svc.cluster.local").answers.map(\.data)) == [.a(IPv4Address("10.244.1.5")!), .a(IPv4Address("10.244.2.6")!)])
        #expect(try ask(z, "db-1.db.default.svc.cluster.local").answers.map(\.data) == [.a(IPv4Address("10.244.2.6")!)])
        #expect(try ask(z, "_peer._tcp.db.default.svc.cluster.local", type: 33).answers.count == 2)
        #expect(try ask(z, "6.2.244.10.in-addr.arpa", type: 12).answers.map(\.data) == [.ptr("db-1.db.default.svc.cluster.local")])
        #expect(try ask(z, "ext.default.svc.cluster.local").answers.map(\.data) == [.cname("example.com")])
        #expect(try ask(z, "10-244-1-5.default.pod.cluster.local").answers.map(\.data) == [.a(IPv4Address("10.244.1.5")!)])
    }

    @Test func missingNamesOtherTypesAndOtherZones() throws {
        var z = Self.zone()
        let missing = try ask(z, "nope.default.svc.cluster.local")
        #expect(missing.responseCode == .nameError && missing.answers.isEmpty)
        // The search path's first try for "web.default" is a name that does not exist.
        #expect(try ask(z, "web.default.default.svc.cluster.local").responseCode == .nameError)
        let aaaa = try ask(z, "web.default.svc.cluster.local", type: 28)
        #expect(aaaa.responseCode == .noError && aaaa.answers.isEmpty)
        #expect(try ask(z, "default.svc.cluster.local").responseCode == .noError)
        #expect(try ask(z, "example.com").responseCode == .refused)
        #expect(try ask(z, "_tcp.web.default.svc.cluster.local").responseCode == .noError)  // above an SRV name
        z.set(service: "default/web", nil, slices: [])
        #expect(try ask(z, "web.default.svc.cluster.local").responseCode == .nameError)
        #expect(try ask(z, "_tcp.web.default.svc.cluster.local").responseCode == .nameError)
    }

    @Test func brokenQueriesGetFormatErrorsOrNothing() throws {
        #expect(throws: DNSMessage.ParseError.tooShort) { try DNSMessage.parse([1, 2, 3]) }
        var truncated = Self.query("web.default.svc.cluster.local")
        truncated.removeLast(3)
        #expect(throws: DNSMessage.ParseError.malformed(id: 0x1234)) { try DNSMessage.parse(truncated) }
        // A compression pointer that points at itself.
        let loop: [UInt8] = [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1]
        #expect(throws: DNSMessage.ParseError.malformed(id: 1)) { try DNSMessage.parse(loop) }
    }

    /// The server's own record (compact forms): a headless Service's names follow its slices,
    /// a relabelled slice leaves the Service it was with, and a re-list's stub delete (no labels)
    /// still finds its Service.
    @Test func headlessNamesFollowSlicesThroughRelabelsAndStubDeletes() throws {
        let server = DNSServer(config: .init(address: SocketAddress(IPv4Address(10, 96, 0, 10), 53)), client: APIClient(server: "http://127.0.0.1:1"))
        func names(_ name: String) throws -> [DNSMessage.RecordData] {
            try server.zone.withLock { try ask($0, name).answers.map(\.data) }
        }
        func slice(for service: String) -> JSON {
            var s: JSON = ["endpoints": [["addresses": ["10.244.1.5"], "hostname": "db-0", "conditions": ["ready": true]]]]
            (s.namespace, s.name) = ("default", "db-abc")
            s.labels = ["kubernetes.io/service-name": service]
            return s
        }
        server.serviceEvent(.added(Self.service("db", clusterIP: "None", ports: [])))
        server.serviceEvent(.added(Self.service("other", clusterIP: "None", ports: [])))
        server.sliceEvent(.added(slice(for: "db")))
        #expect(try names("db-0.db.default.svc.cluster.local") == [.a(IPv4Address("10.244.1.5")!)])
        server.sliceEvent(.updated(old: slice(for: "db"), new: slice(for: "other")))
        #expect(try names("db.default.svc.cluster.local").isEmpty)
        #expect(try names("db-0.other.default.svc.cluster.local") == [.a(IPv4Address("10.244.1.5")!)])
        var stub: JSON = [:]
        (stub.namespace, stub.name) = ("default", "db-abc")
        server.sliceEvent(.deleted(stub))
        #expect(try names("other.default.svc.cluster.local").isEmpty)
        #expect(server.objects.withLock { $0.sliceCount == 0 && $0.slices.isEmpty })
    }

    @Test func bigAnswersAreCutOverUDPAndWholeOverTCP() throws {
        let server = DNSServer(config: .init(address: SocketAddress(IPv4Address(10, 96, 0, 10), 53)), client: APIClient(server: "http://127.0.0.1:1"))
        let endpoints: [JSON] = (1...60).map { ["addresses": [.string("10.244.1.\($0)")], "conditions": ["ready": true]] }
        server.zone.withLock {
            $0.set(service: "default/many", Self.service("many", clusterIP: "None", ports: []), slices: [["endpoints": .array(endpoints)]])
        }
        let udp = try DNSMessage.parse(try #require(server.respond(to: Self.query("many.default.svc.cluster.local"))))
        let udpBytes = try #require(server.respond(to: Self.query("many.default.svc.cluster.local")))
        #expect(udpBytes.count <= 512 && udpBytes[2] & 0x02 != 0)  // TC
        #expect(udp.questions.count == 1)
        let tcpBytes = try #require(server.respond(to: Self.query("many.default.svc.cluster.local"), limit: 65535))
        #expect(tcpBytes[2] & 0x02 == 0)
        #expect(Int(tcpBytes[6]) << 8 | Int(tcpBytes[7]) == 60)  // ANCOUNT
        // A broken query gets FORMERR with its id; a response sent to us gets nothing.
        var broken = Self.query("x.cluster.local", id: 0xbeef)
        broken.removeLast(2)
        #expect(try #require(server.respond(to: broken)).prefix(4) == [0xbe, 0xef, 0x80, 0x01])
        var response = Self.query("web.default.svc.cluster.local")
        response[2] |= 0x80
        #expect(server.respond(to: response) == nil)
    }
}
