import KemuAPI
import KemuClient
import KemuIP
import KemuSystem
import Testing

@testable import KemuProxy

@Suite struct ServicePlanTests {
    static let context = PlanContext(nodeName: "node-1", nodeAddresses: [IPv4Address("172.31.0.11")!, IPv4Address("10.244.1.1")!])

    static func service(_ type: String = "ClusterIP", ports: JSON = [["name": "http", "port": 80, "targetPort": "web", "nodePort": 30080]],
                        extra: [String: JSON] = [:], annotations: [String: String] = [:]) -> JSON {
        var spec: JSON = ["type": .string(type), "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"], "ports": ports]
        for (k, v) in extra { spec[k] = v }
        var s: JSON = ["apiVersion": "v1", "kind": "Service", "spec": spec]
        s.name = "web"
        s.namespace = "default"
        if !annotations.isEmpty { s["metadata", default: [:]]["annotations"] = JSON.stringMapJSON(annotations) }
        return s
    }

    static func endpoint(_ ip: String, node: String, ready: Bool = true, serving: Bool? = nil, terminating: Bool = false) -> JSON {
        ["addresses": [.string(ip)], "nodeName": .string(node),
         "conditions": ["ready": .bool(ready), "serving": .bool(serving ?? ready), "terminating": .bool(terminating)],
         "targetRef": ["kind": "Pod", "namespace": "default", "name": .string("pod-" + ip)]]
    }

    static func slice(_ endpoints: [JSON], ports: JSON = [["name": "http", "port": 8080, "protocol": "TCP"]]) -> JSON {
        var s: JSON = ["addressType": "IPv4", "endpoints": .array(endpoints), "ports": ports]
        s.name = "web-abc"
        s.namespace = "default"
        return s
    }

    static let mixed = slice([endpoint("10.244.1.5", node: "node-1"), endpoint("10.244.2.5", node: "node-2"),
                              endpoint("10.244.2.6", node: "node-2", ready: false)])

    @Test func clusterIPListensOnItsPortAndSendsToReadyEndpointsOnTheTargetPort() {
        let plan = ServicePlan(service: Self.service(), slices: [Self.mixed], context: Self.context)
        #expect(plan.tcpPools == [SocketAddress(IPv4Address("10.96.0.20")!, 80): "default/web:http"])
        #expect(plan.localAddresses == [IPv4Address("10.96.0.20")!])
        #expect(plan.pools["default/web:http"]?.endpoints.map(\.address.description) == ["10.244.1.5:8080", "10.244.2.5:8080"])
        #expect(plan.pools["default/web:http"]?.endpoints.first?.target == "default/pod-10.244.1.5")
    }

    @Test func nodePortListensOnEveryNodeAddress() {
        let plan = ServicePlan(service: Self.service("NodePort"), slices: [Self.mixed], context: Self.context)
        #expect(Set(plan.tcpPools.keys.map(\.description)) == ["10.96.0.20:80", "172.31.0.11:30080", "10.244.1.1:30080"])
        #expect(Set(plan.tcpPools.values) == ["default/web:http"])
    }

    @Test func externalTrafficPolicyLocalUsesOnlyThisNodesEndpointsForNodePorts() {
        let plan = ServicePlan(service: Self.service("NodePort", extra: ["externalTrafficPolicy": "Local"]), slices: [Self.mixed], context: Self.context)
        #expect(plan.tcpPools[SocketAddress(IPv4Address("10.96.0.20")!, 80)] == "default/web:http")
        #expect(plan.tcpPools[SocketAddress(IPv4Address("172.31.0.11")!, 30080)] == "default/web:http@local")
        #expect(plan.pools["default/web:http@local"]?.endpoints.map(\.address.description) == ["10.244.1.5:8080"])
        // On a node with no local endpoint the Local pool is empty: its NodePort rejects.
        var other = Self.context
        other.nodeName = "node-3"
        let empty = ServicePlan(service: Self.service("NodePort", extra: ["externalTrafficPolicy": "Local"]), slices: [Self.mixed], context: other)
        #expect(empty.pools["default/web:http@local"]?.endpoints == [])
        // Pods and the node itself still reach every endpoint through it, as kube-proxy sends
        // in-cluster traffic on with Cluster semantics.
        let nodePort = empty.frontends[FrontendAddress(SocketAddress(IPv4Address("172.31.0.11")!, 30080))]
        #expect(nodePort?.inClusterPool == "default/web:http")
        #expect(empty.pools["default/web:http"]?.endpoints.map(\.address.description) == ["10.244.1.5:8080", "10.244.2.5:8080"])
        #expect(empty.frontends[FrontendAddress(SocketAddress(IPv4Address("10.96.0.20")!, 80))]?.inClusterPool == nil)
    }

    @Test func internalTrafficPolicyLocalAppliesToTheClusterIP() {
        let plan = ServicePlan(service: Self.service(extra: ["internalTrafficPolicy": "Local"]), slices: [Self.mixed], context: Self.context)
        #expect(plan.tcpPools[SocketAddress(IPv4Address("10.96.0.20")!, 80)] == "default/web:http@local")
        #expect(plan.pools.keys.sorted() == ["default/web:http@local"])
    }

    @Test func servingTerminatingEndpointsAreUsedOnlyWhenNoneIsReady() {
        let draining = Self.slice([Self.endpoint("10.244.1.7", node: "node-1", ready: false, serving: true, terminating: true),
                                   Self.endpoint("10.244.1.8", node: "node-1", ready: false, serving: false, terminating: true)])
        let plan = ServicePlan(service: Self.service(), slices: [draining], context: Self.context)
        #expect(plan.pools["default/web:http"]?.endpoints.map(\.address.description) == ["10.244.1.7:8080"])
        let withReady = ServicePlan(service: Self.service(), slices: [draining, Self.mixed], context: Self.context)
        #expect(withReady.pools["default/web:http"]?.endpoints.count == 2)
    }

    @Test func multiPortServicesMatchSlicePortsByName() {
        let ports: JSON = [["name": "http", "port": 80, "targetPort": 8080], ["name": "echo", "port": 7, "targetPort": 9000]]
        let slice = Self.slice([Self.endpoint("10.244.1.5", node: "node-1")],
                               ports: [["name": "echo", "port": 9000, "protocol": "TCP"], ["name": "http", "port": 8080, "protocol": "TCP"]])
        let plan = ServicePlan(service: Self.service(ports: ports), slices: [slice], context: Self.context)
        #expect(plan.pools["default/web:echo"]?.endpoints.map(\.address.port) == [9000])
        #expect(plan.pools["default/web:http"]?.endpoints.map(\.address.port) == [8080])
        #expect(plan.tcpPools.count == 2)
    }

    @Test func aTargetPortNoPodServesIsReported() {
        let slice = Self.slice([Self.endpoint("10.244.1.5", node: "node-1")], ports: [])
        let plan = ServicePlan(service: Self.service(), slices: [slice], context: Self.context)
        #expect(plan.pools["default/web:http"]?.endpoints == [])
        #expect(plan.problems.count == 1 && plan.problems[0].contains("targetPort web"))
    }

    @Test func loadBalancerAndExternalIPsAreServedAndMadeLocal() {
        var s = Self.service("LoadBalancer", extra: ["externalIPs": ["192.0.2.7"], "externalTrafficPolicy": "Local"])
        s["status"] = ["loadBalancer": ["ingress": [["ip": "172.31.1.5"]]]]
        let plan = ServicePlan(service: s, slices: [Self.mixed], context: Self.context)
        #expect(plan.localAddresses == Set(["10.96.0.20", "192.0.2.7", "172.31.1.5"].map { IPv4Address($0)! }))
        #expect(plan.tcpPools[SocketAddress(IPv4Address("172.31.1.5")!, 80)] == "default/web:http")
        #expect(plan.tcpPools[SocketAddress(IPv4Address("192.0.2.7")!, 80)] == "default/web:http@local")
    }

    @Test func topologyHintsNarrowTheClusterEndpointsWhileSomeAreForHere() {
        func hinted(_ ip: String, node: String, zone: String) -> JSON {
            var e = Self.endpoint(ip, node: node)
            e["hints"] = ["forZones": [["name": .string(zone)]], "forNodes": [["name": .string(node)]]]
            return e
        }
        var context = Self.context
        context.zone = "zone-b"
        let slices = [SliceInfo(Self.slice([hinted("10.244.1.5", node: "node-1", zone: "zone-a"), hinted("10.244.2.5", node: "node-2", zone: "zone-b"),
                                            hinted("10.244.3.5", node: "node-3", zone: "zone-b")]))]
        let ips = { (plan: ServicePlan) in plan.pools["default/web:http"]?.endpoints.map(\.address.ip.description) ?? [] }
        // node-1 has its own endpoint: node hints win.
        #expect(ips(ServicePlan(service: ServiceInfo(Self.service()), slices: slices, context: context)) == ["10.244.1.5"])
        // node-9 of zone-b has none of its own: its zone's.
        context.nodeName = "node-9"
        #expect(ips(ServicePlan(service: ServiceInfo(Self.service()), slices: slices, context: context)).sorted() == ["10.244.2.5", "10.244.3.5"])
        // A zone with no endpoint gets them all.
        context.zone = "zone-z"
        #expect(ips(ServicePlan(service: ServiceInfo(Self.service()), slices: slices, context: context)).count == 3)
    }

    @Test func headlessAndExternalNameAreNotProxied() {
        #expect(ServicePlan(service: Self.service(extra: ["clusterIP": "None", "clusterIPs": ["None"]]), slices: [Self.mixed], context: Self.context) == ServicePlan())
        #expect(ServicePlan(service: Self.service("ExternalName"), slices: [], context: Self.context) == ServicePlan())
    }

    @Test func udpPortsGetFrontendsOfTheirOwnBesideTCPOnTheSameNumber() {
        let ports: JSON = [["name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053], ["name": "dns-tcp", "port": 53, "protocol": "TCP"],
                           ["name": "sctp", "port": 99, "protocol": "SCTP"]]
        let slice = Self.slice([Self.endpoint("10.244.2.5", node: "node-2")],
                               ports: [["name": "dns", "port": 5353, "protocol": "UDP"], ["name": "dns-tcp", "port": 5353, "protocol": "TCP"]])
        let plan = ServicePlan(service: Self.service("NodePort", ports: ports), slices: [slice], context: Self.context)
        let clusterIP = SocketAddress(IPv4Address("10.96.0.20")!, 53)
        #expect(plan.frontends[FrontendAddress(clusterIP, .udp)] == Frontend(pool: "default/web:dns", source: .pods))
        #expect(plan.frontends[FrontendAddress(clusterIP, .tcp)] == Frontend(pool: "default/web:dns-tcp", source: .pods))
        #expect(plan.frontends[FrontendAddress(SocketAddress(IPv4Address("172.31.0.11")!, 30053), .udp)] == Frontend(pool: "default/web:dns", source: .node))
        #expect(plan.pools["default/web:dns"]?.endpoints.map(\.address.description) == ["10.244.2.5:5353"])
        #expect(plan.frontends.count == 4)  // ClusterIP UDP+TCP, two NodePorts (UDP): no SCTP
    }

    @Test func whoseAddressTheEndpointSeesFollowsKubeProxysMasqueradeRules() {
        var s = Self.service("NodePort", extra: ["externalIPs": ["192.0.2.7"]])
        let cluster = ServicePlan(service: s, slices: [Self.mixed], context: Self.context)
        #expect(cluster.frontends[FrontendAddress(SocketAddress(IPv4Address("10.96.0.20")!, 80))]?.source == .pods)
        #expect(cluster.frontends[FrontendAddress(SocketAddress(IPv4Address("172.31.0.11")!, 30080))]?.source == .node)
        #expect(cluster.frontends[FrontendAddress(SocketAddress(IPv4Address("192.0.2.7")!, 80))]?.source == .node)
        s["spec"]?["externalTrafficPolicy"] = "Local"
        let local = ServicePlan(service: s, slices: [Self.mixed], context: Self.context)
        #expect(local.frontends[FrontendAddress(SocketAddress(IPv4Address("172.31.0.11")!, 30080))]?.source == .client)
        #expect(local.frontends[FrontendAddress(SocketAddress(IPv4Address("192.0.2.7")!, 80))]?.source == .client)
        #expect(local.frontends[FrontendAddress(SocketAddress(IPv4Address("10.96.0.20")!, 80))]?.source == .pods)
    }

    @Test func annotationsAndAffinityShapeThePool() {
        let s = Self.service(extra: ["sessionAffinity": "ClientIP"],
                             annotations: [ServiceAnnotations.algorithm: "least-connections", ServiceAnnotations.connectAttempts: "2",
                                           ServiceAnnotations.healthCheckSeconds: "5"])
        let settings = ServicePlan(service: s, slices: [Self.mixed], context: Self.context).pools["default/web:http"]!.settings
        #expect(settings.algorithm == .leastConnections)
        #expect(settings.connectAttempts == 2)
        #expect(settings.healthCheckSeconds == 5)
        let noCheck = ServicePlan(service: Self.service(annotations: [ServiceAnnotations.healthCheckSeconds: "0.5"]), slices: [], context: Self.context)
        #expect(noCheck.problems == ["annotation kemu.io/health-check-seconds: \"0.5\" is not a whole number of seconds from 1 to 3600"])
        #expect(settings.affinitySeconds == 10800)
        let bad = ServicePlan(service: Self.service(annotations: [ServiceAnnotations.algorithm: "fastest"]), slices: [], context: Self.context)
        #expect(bad.problems == ["annotation kemu.io/load-balancer: \"fastest\" is not one of round-robin, least-connections, random, p2c-ewma; using round-robin"])
    }


    @Test func theCloudLoadBalancerSendsIngressTrafficToNodePortsOfReadyNodes() {
        var s = Self.service("LoadBalancer")
        s["status"] = ["loadBalancer": ["ingress": [["ip": "172.31.1.5"]]]]
        let nodes = [BalancedNode(name: "node-1", address: IPv4Address("172.31.0.11")!, ready: true),
                     BalancedNode(name: "node-2", address: IPv4Address("172.31.0.12")!, ready: true),
                     BalancedNode(name: "node-3", address: IPv4Address("172.31.0.13")!, ready: false)]
        let plan = ServicePlan(loadBalancerFor: s, slices: [Self.mixed], nodes: nodes, defaults: PoolSettings())
        #expect(plan.tcpPools == [SocketAddress(IPv4Address("172.31.1.5")!, 80): "default/web:http@lb"])
        #expect(plan.pools["default/web:http@lb"]?.endpoints.map(\.address.description) == ["172.31.0.11:30080", "172.31.0.12:30080"])
        // Local: only nodes with a ready endpoint of the Service (node-2's second one is not ready,
        // its first is).
        s["spec"]?["externalTrafficPolicy"] = "Local"
        let onlyNode1 = Self.slice([Self.endpoint("10.244.1.5", node: "node-1"), Self.endpoint("10.244.2.6", node: "node-2", ready: false)])
        let local = ServicePlan(loadBalancerFor: s, slices: [onlyNode1], nodes: nodes, defaults: PoolSettings())
        #expect(local.pools["default/web:http@lb"]?.endpoints.map(\.nodeName) == ["node-1"])
        // Pending (no ingress yet), or not a LoadBalancer: nothing to do.
        #expect(ServicePlan(loadBalancerFor: Self.service("LoadBalancer"), slices: [], nodes: nodes, defaults: PoolSettings()) == ServicePlan())
        #expect(ServicePlan(loadBalancerFor: Self.service("NodePort"), slices: [], nodes: nodes, defaults: PoolSettings()) == ServicePlan())
    }

    @Test func aLocalLoadBalancerHasAHealthCheckCountingReadyLocalEndpoints() {
        let s = Self.service("LoadBalancer", extra: ["externalTrafficPolicy": "Local", "healthCheckNodePort": 31999])
        #expect(ServicePlan(service: s, slices: [Self.mixed], context: Self.context).healthCheck == .init(port: 31999, localEndpoints: 1))
        var node2 = Self.context
        node2.nodeName = "node-2"  // one ready, one not
        #expect(ServicePlan(service: s, slices: [Self.mixed], context: node2).healthCheck?.localEndpoints == 1)
        node2.nodeName = "node-9"
        #expect(ServicePlan(service: s, slices: [Self.mixed], context: node2).healthCheck?.localEndpoints == 0)
        #expect(ServicePlan(service: Self.service("LoadBalancer"), slices: [Self.mixed], context: Self.context).healthCheck == nil)
    }
}

extension ServicePlan {
    /// The TCP frontends and the pool each feeds.
    var tcpPools: [SocketAddress: String] {
        Dictionary(uniqueKeysWithValues: frontends.filter { $0.key.transport == .tcp }.map { ($0.key.address, $0.value.pool) })
    }
}
