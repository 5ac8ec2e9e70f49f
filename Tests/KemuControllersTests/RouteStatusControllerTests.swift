import Foundation
import KemuAPI
import KemuControllers
import KemuStore
import Testing

/// Routes' status as a GAMMA implementation reports it: Accepted when the parent Service exists,
/// ResolvedRefs naming the backend at fault, other controllers' entries left alone.
@Suite struct RouteStatusControllerTests {
    static let resource = "httproutes.gateway.networking.k8s.io"

    func service(_ store: Store, _ name: String, port: Int64 = 80) throws {
        var o: JSON = ["apiVersion": "v1", "kind": "Service", "spec": ["ports": [["port": .int(port)]]]]
        o.name = name
        o.namespace = "shop"
        try store.create("services", o)
    }

    func conditions(_ store: Store) -> [String: (String, String)] {
        let parents = store.get(Self.resource, namespace: "shop", name: "canary")?[path: "status.parents"]?.array ?? []
        let ours = parents.first { $0["controllerName"]?.string == RouteStatusController.controllerName }
        var result: [String: (String, String)] = [:]
        for c in ours?["conditions"]?.array ?? [] { result[c["type"]?.string ?? ""] = (c["status"]?.string ?? "", c["reason"]?.string ?? "") }
        return result
    }

    @Test func acceptedAndResolvedFollowTheServices() async throws {
        let store = Store()
        let controller = RouteStatusController(store: store)
        var route: JSON = ["apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "spec": [
            // (No group: a Service parent is core's, as the proxies read it.)
            "parentRefs": [["kind": "Service", "name": "web", "port": 80], ["name": "public"]],
            "rules": [["backendRefs": [["name": "web-v1", "port": 80, "weight": 90], ["name": "web-v2", "port": 80, "weight": 10]]]],
        ], "status": ["parents": [["parentRef": ["name": "public"], "controllerName": "example.com/gateway", "conditions": []]]]]
        route.name = "canary"
        route.namespace = "shop"
        try store.create(Self.resource, route)
        let key = EndpointSliceController.Key(namespace: "shop", name: "\(Self.resource)/canary")

        try controller.reconcile(key)
        var c = conditions(store)
        #expect(c["Accepted"]?.0 == "False" && c["Accepted"]?.1 == "NoMatchingParent")
        #expect(c["ResolvedRefs"]?.0 == "False" && c["ResolvedRefs"]?.1 == "BackendNotFound")

        try service(store, "web")
        try service(store, "web-v1")
        try service(store, "web-v2", port: 8080)
        try controller.reconcile(key)
        c = conditions(store)
        #expect(c["Accepted"]?.0 == "True")
        #expect(c["ResolvedRefs"]?.1 == "BackendNotFound", "web-v2 has no port 80")
        try store.modify("services", namespace: "shop", name: "web-v2") { $0["spec"] = ["ports": [["port": 80]]] }
        try controller.reconcile(key)
        #expect(conditions(store)["ResolvedRefs"]?.0 == "True")
        // The gateway's own entry is still there.
        let parents = store.get(Self.resource, namespace: "shop", name: "canary")?[path: "status.parents"]?.array ?? []
        #expect(parents.contains { $0["controllerName"]?.string == "example.com/gateway" } && parents.count == 2)
        // Nothing changed: nothing written.
        let revision = store.get(Self.resource, namespace: "shop", name: "canary")?.resourceVersion
        try controller.reconcile(key)
        #expect(store.get(Self.resource, namespace: "shop", name: "canary")?.resourceVersion == revision)
    }
}
