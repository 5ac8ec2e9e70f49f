import Foundation
import KemuAPI
import KemuIP
import KemuStore
@testable import KemuAPIServer
import KemuTestSupport
import Testing

@Suite struct ServiceAllocatorTests {
    func service(_ name: String, type: String = "ClusterIP", clusterIP: String? = nil, nodePort: Int? = nil) -> JSON {
        var s: JSON = ["metadata": ["name": .string(name), "namespace": "default"], "spec": ["type": .string(type)]]
        if let clusterIP { s["spec"]?["clusterIP"] = .string(clusterIP) }
        var port: JSON = ["port": 80, "protocol": "TCP"]
        if let nodePort { port["nodePort"] = .int(Int64(nodePort)) }
        s["spec"]?["ports"] = [port]
        return s
    }

    @Test func dynamicAddressesAvoidTheStaticBandUntilTheRestIsFull() {
        // /28: 14 usable, static band = 16 → everything is "static": dynamic falls back to it.
        let small = ServiceAllocator(ServiceRanges(serviceCIDR: IPv4Network("10.0.0.0/28")!), existing: [])
        var got: Set<String> = []
        for i in 0..<14 {
            var s = service("s\(i)")
            #expect(small.allocate(&s).isEmpty)
            got.insert(s[path: "spec.clusterIP"]!.string!)
        }
        #expect(got.count == 14 && !got.contains("10.0.0.0") && !got.contains("10.0.0.15"))
        var full = service("full")
        #expect(small.allocate(&full).first?.message.contains("range is full") == true)

        let big = ServiceAllocator(ServiceRanges(), existing: [])
        for i in 0..<200 {
            var s = service("d\(i)")
            #expect(big.allocate(&s).isEmpty)
            let ip = IPv4Address(s[path: "spec.clusterIP"]!.string!)!
            #expect(ip.value - IPv4Address("10.96.0.0")!.value > 256, "\(ip) is in the static band")
        }
    }

    @Test func oneNodePortServesAPortOverTCPAndUDPButNeverOneProtocolTwice() {
        let a = ServiceAllocator(ServiceRanges(), existing: [])
        func dns(_ nodePorts: [Int?], protocols: [String] = ["UDP", "TCP"]) -> JSON {
            var s = service("dns", type: "NodePort")
            s["spec"]?["ports"] = .array(zip(nodePorts, protocols).map { nodePort, proto in
                var p: JSON = ["port": 53, "protocol": .string(proto)]
                if let nodePort { p["nodePort"] = .int(Int64(nodePort)) }
                return p
            })
            return s
        }
        var auto = dns([nil, nil])
        #expect(a.allocate(&auto).isEmpty)
        let given = (auto[path: "spec.ports"]?.array ?? []).compactMap { $0["nodePort"]?.int }
        #expect(given.count == 2 && given[0] == given[1], "\(given)")
        var asked = dns([30053, 30053])
        #expect(a.allocate(&asked).isEmpty)
        var twice = dns([30054, 30054], protocols: ["TCP", "TCP"])
        #expect(a.allocate(&twice).first?.message == "Duplicate value: 30054")
        #expect(a.counts.ports == 2)  // the refused one took nothing
    }

    @Test func requestedValuesAreHonouredOrRefused() {
        let a = ServiceAllocator(ServiceRanges(), existing: [])
        var dns = service("dns", clusterIP: "10.96.0.10")
        #expect(a.allocate(&dns).isEmpty && dns[path: "spec.clusterIPs"] == ["10.96.0.10"])
        var twice = service("twice", clusterIP: "10.96.0.10")
        #expect(a.allocate(&twice).first?.message.contains("provided IP is already allocated") == true)
        var outside = service("out", clusterIP: "10.97.0.1")
        let outsideErrors = a.allocate(&outside)
        #expect(outsideErrors.first?.field == "spec.clusterIPs" && outsideErrors.first?.message.contains("10.96.0.0/16") == true)
        var np = service("np", type: "NodePort", nodePort: 30080)
        #expect(a.allocate(&np).isEmpty)
        var np2 = service("np2", type: "NodePort", nodePort: 30080)
        #expect(a.allocate(&np2).first?.field == "spec.ports[0].nodePort")
        var bad = service("bad", type: "NodePort", nodePort: 80)
        #expect(a.allocate(&bad).first?.message.contains("valid range. The range of valid ports is 30000-32767") == true)
        // A refused request takes nothing: the IP it would have got is still free.
        #expect(a.counts.ips == 2 && a.counts.ports == 1)
        a.release(dns)
        var again = service("dns2", clusterIP: "10.96.0.10")
        #expect(a.allocate(&again).isEmpty)
    }

    @Test func loadBalancersGetAnIngressIPUntilThePoolRunsOut() {
        let a = ServiceAllocator(ServiceRanges(loadBalancerPool: IPv4Network("172.31.1.0/30")!), existing: [])
        var ips: [String] = []
        for i in 0..<3 {
            var s = service("lb\(i)", type: "LoadBalancer")
            #expect(a.allocate(&s).isEmpty)
            #expect(s[path: "spec.ports"]?.array?.first?["nodePort"]?.int != nil)
            if let ip = s[path: "status.loadBalancer.ingress"]?.array?.first?["ip"]?.string { ips.append(ip) }
        }
        #expect(Set(ips) == ["172.31.1.1", "172.31.1.2"])  // the third stays pending
    }

    @Test func localLoadBalancersGetAHealthCheckNodePortThatIsReleasedWithThem() {
        let a = ServiceAllocator(ServiceRanges(), existing: [])
        var s = service("local", type: "LoadBalancer")
        s["spec"]?["externalTrafficPolicy"] = "Local"
        #expect(a.allocate(&s).isEmpty)
        let health = s[path: "spec.healthCheckNodePort"]?.int
        #expect(health != nil && health != s[path: "spec.ports"]?.array?.first?["nodePort"]?.int)
        #expect(a.counts.ports == 2)
        // Back to Cluster: the field goes, and its port with it.
        var cluster = s
        cluster["spec"]?["externalTrafficPolicy"] = "Cluster"
        #expect(a.reallocate(&cluster, replacing: s).isEmpty)
        #expect(cluster[path: "spec.healthCheckNodePort"] == nil && a.counts.ports == 1)
        a.release(cluster)
        #expect(a.counts.ports == 0)
        var wrong = service("wrong", type: "LoadBalancer")
        wrong["spec"]?["externalTrafficPolicy"] = "Local"
        wrong["spec"]?["healthCheckNodePort"] = 80
        #expect(a.allocate(&wrong).map(\.field) == ["spec.healthCheckNodePort"])
    }

    @Test func concurrentCreatesNeverShareAnAddress() async {
        let a = ServiceAllocator(ServiceRanges(serviceCIDR: IPv4Network("10.96.0.0/24")!), existing: [])
        let ips = await withTaskGroup(of: String?.self) { group in
            for i in 0..<254 {
                group.addTask {
                    var s = service("c\(i)", type: "NodePort")
                    return a.allocate(&s).isEmpty ? s[path: "spec.clusterIP"]?.string : nil
                }
            }
            var all: [String] = []
            for await ip in group { if let ip { all.append(ip) } }
            return all
        }
        #expect(ips.count == 254 && Set(ips).count == 254)
    }

    @Test func theAllocatorIsRebuiltFromStoredServices() {
        var kept = service("kept", type: "NodePort", clusterIP: "10.96.5.5", nodePort: 31000)
        kept["status"] = ["loadBalancer": ["ingress": [["ip": "172.31.1.9"]]]]
        let a = ServiceAllocator(ServiceRanges(), existing: [kept])
        var clash = service("clash", clusterIP: "10.96.5.5")
        #expect(!a.allocate(&clash).isEmpty)
        #expect(a.counts.ports == 1 && a.counts.lbIPs == 1)
    }

    @Test func aServiceDeletedByAnyoneFreesItsAddresses() throws {
        let store = Store()
        let api = try APIServer(store: store)
        var svc = service("gc-owned", type: "NodePort", clusterIP: "10.96.7.7", nodePort: 31007)
        svc["apiVersion"] = "v1"
        svc["kind"] = "Service"
        var first = svc
        #expect(api.services.allocate(&first).isEmpty)
        try store.create("services", first)
        // Deleted straight from the store, as the garbage collector or a namespace purge does.
        try store.delete("services", namespace: "default", name: "gc-owned")
        var again = svc
        #expect(api.services.allocate(&again).isEmpty)
    }
}
