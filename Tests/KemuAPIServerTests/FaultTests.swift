import KemuAPI
import KemuTestSupport
import Testing

@testable import KemuAPIServer

/// kemu.dev/v1 Faults: what the API accepts, what it refuses (naming the field), and the rates.
struct FaultTests {
    let faults = APIResources.all.first { $0.resource == "faults" }!

    func fault(_ spec: JSON, name: String = "f") -> JSON {
        var o: JSON = ["apiVersion": "kemu.dev/v1", "kind": "Fault", "spec": spec]
        o.name = name
        o.namespace = "default"
        return o
    }

    func errors(_ spec: JSON) -> [String] {
        Admission.validate(fault(spec), faults).map { "\($0.field): \($0.message)" }
    }

    @Test func aFaultIsServedInItsOwnGroupAndReadBack() {
        #expect(faults.groupVersion == "kemu.dev/v1" && faults.namespaced && faults.qualifiedName == Fault.resource)
        let object = fault(["service": "web", "sources": ["10.244.1.0/24"], "latency": ["milliseconds": 200, "jitterMilliseconds": 50],
                            "abort": ["percent": 30], "hang": ["percent": 10.5], "bandwidth": ["rate": "1mbit"]])
        #expect(errors(object["spec"]!).isEmpty)
        let f = Fault(object)
        #expect(f.service == "web" && f.sources == ["10.244.1.0/24"] && f.latencyMilliseconds == 200 && f.jitterMilliseconds == 50)
        #expect(f.abortPercent == 30 && f.hangPercent == 10.5 && f.bytesPerSecond == 125_000)
        #expect(f.summary == "200ms±50ms latency, 30% abort, 10.5% hang, 1mbit")
        #expect(Fault(f.object) == f)
    }

    @Test func badFaultsAreRefusedNamingTheField() {
        #expect(errors([:]) == ["spec.service: Required value",
                                "spec: Invalid value: {}: a Fault needs at least one of latency, abort, hang, bandwidth"])
        #expect(errors(["service": "web", "abrot": ["percent": 1], "abort": ["percent": 1]])
                == ["spec.abrot: unknown field; a Fault's spec has service, sources, latency, abort, hang, bandwidth"])
        #expect(errors(["service": "web", "abort": ["percent": 70], "hang": ["percent": 40]])
                == ["spec.hang.percent: Invalid value: 40%: abort and hang add up to more than 100%"])
        #expect(errors(["service": "web", "abort": ["percent": 101]]) == ["spec.abort.percent: Invalid value: 101: must be a number from 0 to 100"])
        #expect(errors(["service": "web", "latency": ["milliseconds": 10, "jitterMilliseconds": 20]])
                == ["spec.latency.jitterMilliseconds: Invalid value: 20: must not exceed spec.latency.milliseconds (10)"])
        #expect(errors(["service": "web", "sources": ["10.0.0.1/8"], "hang": ["percent": 5]])
                == ["spec.sources[0]: Invalid value: \"10.0.0.1/8\": not an IPv4 CIDR (like 10.244.1.0/24)"])
        #expect(errors(["service": "web", "bandwidth": ["rate": "fast"]])
                == ["spec.bandwidth.rate: Invalid value: \"fast\": a rate such as 1mbit, 500kbit or 100kbps (tc's units)"])
    }

    @Test func twoFaultsOnOneServiceForTheSameClientsAreRefused() {
        let all = fault(["service": "web", "abort": ["percent": 5]], name: "all")
        let some = fault(["service": "web", "sources": ["10.244.1.0/24"], "hang": ["percent": 5]], name: "some")
        let other = fault(["service": "web", "sources": ["10.244.2.0/24"], "hang": ["percent": 5]], name: "other")
        let elsewhere = fault(["service": "db", "abort": ["percent": 5]], name: "elsewhere")
        #expect(Admission.faultOverlaps(some, [all])?.message.contains("overlaps Fault \"all\" on Service web") == true)
        #expect(Admission.faultOverlaps(all, [some])?.field == "spec.sources")
        #expect(Admission.faultOverlaps(other, [some, elsewhere]) == nil)
        #expect(Admission.faultOverlaps(some, [some]) == nil)  // an update of itself
    }

    @Test func ratesUseTcUnits() {
        #expect(Fault.parseRate("8bit") == 1 && Fault.parseRate("1kbit") == 125 && Fault.parseRate("2mbit") == 250_000)
        #expect(Fault.parseRate("1gbit") == 125_000_000 && Fault.parseRate("100kbps") == 100_000 && Fault.parseRate("1.5MBPS") == 1_500_000)
        #expect(Fault.parseRate("1") == nil && Fault.parseRate("4bit") == nil && Fault.parseRate("-1mbit") == nil && Fault.parseRate("mbit") == nil)
    }
}

/// The failover lab's marks on a Node (`kemu mesh skew`, `kemu mesh revoke`): every proxy reads
/// them, so what none could read is refused at the API, naming the annotation.
struct NodeMeshAnnotationTests {
    @Test func badSkewsAndSerialsAreRefusedNamingTheAnnotation() {
        let nodes = APIResources.nodes
        func errors(_ annotations: [String: String]) -> [String] {
            var node: JSON = ["apiVersion": "v1", "kind": "Node"]
            node.name = "node-1"
            node.annotations = annotations
            return Admission.validate(node, nodes).map(\.field)
        }
        #expect(errors([Mesh.clockSkewAnnotation: "-90m", Mesh.revokedAnnotation: "1f@1700000000,ab"]).isEmpty)
        #expect(errors([Mesh.clockSkewAnnotation: "tomorrow"]) == ["metadata.annotations[kemu.dev/clock-skew]"])
        #expect(errors([Mesh.revokedAnnotation: "1f,xyz"]) == ["metadata.annotations[kemu.dev/revoked-certificates]"])
    }
}
