import KemuAPI
import Testing

/// Gateway API routes in their mesh shape, as kemu reads them; Linkerd's failure accrual settings.
@Suite struct TrafficRouteTests {
    func object(_ kind: String = "HTTPRoute", spec: JSON) -> JSON {
        var o: JSON = ["apiVersion": "gateway.networking.k8s.io/v1", "kind": .string(kind), "spec": spec]
        o.namespace = "shop"
        o.name = "canary"
        return o
    }

    func problems(_ o: JSON) -> [String] {
        guard case let .failure(p) = TrafficRoute.parse(o) else { return [] }
        return p.items.map { "\($0.field): \($0.message)" }
    }

    @Test func aCanaryRouteNamesItsServiceAndWeightedBackends() throws {
        let route = try TrafficRoute.parse(object(spec: [
            "parentRefs": [["group": "", "kind": "Service", "name": "web", "port": 80], ["name": "public-gateway"]],
            "rules": [
                ["matches": [["headers": [["name": "x-canary", "value": "1"]]]], "backendRefs": [["name": "web-v2", "port": 80]]],
                ["matches": [["path": ["type": "PathPrefix", "value": "/"]]],
                 "backendRefs": [["name": "web-v1", "port": 80, "weight": 90], ["name": "web-v2", "port": 80, "weight": 10],
                                 ["name": "web-v3", "namespace": "other", "port": 80]]],
            ],
        ])).get()
        #expect(route.parents == [TrafficRoute.Parent(service: "web", port: 80)])
        #expect(route.backends.map { "\($0.service):\($0.port)=\($0.weight) \($0.resolvable)" } == ["web-v1:80=90 true", "web-v2:80=10 true", "web-v3:80=1 false"])
        #expect(route.notes.contains { $0.hasPrefix("spec.parentRefs[1]: Gateway public-gateway is not a Service") })
        #expect(route.notes.contains { $0.hasPrefix("spec.rules[0]: not followed") })
        // A TCPRoute's first rule is the one; no rules at all splits nothing.
        let tcp = try TrafficRoute.parse(object("TCPRoute", spec: ["parentRefs": [["kind": "Service", "name": "db"]],
                                                                  "rules": [["backendRefs": [["name": "db-primary", "port": 5432]]]]])).get()
        #expect(tcp.parents == [TrafficRoute.Parent(service: "db", port: nil)] && tcp.backends.map(\.service) == ["db-primary"])
    }

    @Test func whatTheSchemasRefuseIsRefusedNamingTheField() {
        #expect(problems(object(spec: ["parentRefs": [["kind": "Service"]], "rules": [["backendRefs": [["name": "v1"]]]]])) == [
            "spec.parentRefs[0].name: Required value",
            "spec.rules[0].backendRefs[0].port: Required value: a Service reference must name its port",
        ])
        #expect(problems(object(spec: ["parentRefs": [["kind": "Service", "name": "web", "port": 70000]],
                                       "rules": [["backendRefs": [["name": "v1", "port": 80, "weight": -1]]]]])) == [
            "spec.parentRefs[0].port: 70000: must be a port number from 1 to 65535",
            "spec.rules[0].backendRefs[0].weight: -1: must be a whole number from 0 to 1000000",
        ])
        #expect(problems(object(spec: ["parentRefs": "web"])) == ["spec.parentRefs: must be a list"])
        #expect(problems(object(spec: ["rules": .array(Array(repeating: [:], count: 17))])) == ["spec.rules: must have at most 16 items"])
    }

    @Test func goDurationsAsLinkerdWritesThem() {
        #expect(FailureAccrual.goDurationSeconds("1s") == 1)
        #expect(FailureAccrual.goDurationSeconds("250ms") == 0.25)
        #expect(FailureAccrual.goDurationSeconds("1m30s") == 90)
        #expect(FailureAccrual.goDurationSeconds("1.5h") == 5400)
        for bad in ["", "1", "s", "1x", "-1s", "1s2"] { #expect(FailureAccrual.goDurationSeconds(bad) == nil, "\(bad)") }
        let (none, noProblems) = FailureAccrual.parse(["kemu.io/load-balancer": "random"])
        #expect(none == nil && noProblems.isEmpty)
        let (_, problems) = FailureAccrual.parse([FailureAccrual.mode: "always"])
        #expect(problems == ["annotation balancer.linkerd.io/failure-accrual: \"always\" is not \"consecutive\" (the only mode Linkerd has)"])
    }
}
