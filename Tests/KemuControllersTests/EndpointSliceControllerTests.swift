import Foundation
import KemuAPI
import KemuControllers
import KemuStore
import KemuTestSupport
import Synchronization
import Testing

@Suite struct EndpointSliceControllerTests {
    func service(_ name: String, selector: [String: String]?, targetPort: JSON = 8080, publishNotReady: Bool = false) -> JSON {
        var s: JSON = ["apiVersion": "v1", "kind": "Service"]
        s.name = name
        s.namespace = "default"
        s["spec"] = ["ports": [["name": "http", "port": 80, "protocol": "TCP", "targetPort": targetPort]]]
        if let selector { s["spec"]?["selector"] = JSON.stringMapJSON(selector) }
        if publishNotReady { s["spec"]?["publishNotReadyAddresses"] = true }
        return s
    }

    func pod(_ name: String, ip: String?, ready: Bool, labels: [String: String] = ["app": "web"], port: Int64 = 8080) -> JSON {
        var p: JSON = ["apiVersion": "v1", "kind": "Pod"]
        p.name = name
        p.namespace = "default"
        p.labels = labels
        p["spec"] = ["nodeName": "node-1", "containers": [["name": "c", "image": "i", "ports": [["name": "web", "containerPort": .int(port)]]]]]
        var status: JSON = ["phase": "Running", "conditions": [["type": "Ready", "status": ready ? "True" : "False"]]]
        if let ip { status["podIP"] = .string(ip) }
        p["status"] = status
        return p
    }

    /// Endpoints of the service's slices as "ip:port ready/serving/terminating", sorted.
    func endpoints(_ store: Store, _ service: String) -> [String] {
        store.list("endpointslices.discovery.k8s.io", namespace: "default",
                   labels: LabelSelector(matchLabels: ["kubernetes.io/service-name": service])).items.flatMap { slice in
            (slice["endpoints"]?.array ?? []).map { e in
                let c = e["conditions"] ?? [:]
                let flags = [c["ready"]?.bool == true ? "R" : "-", c["serving"]?.bool == true ? "S" : "-", c["terminating"]?.bool == true ? "T" : "-"]
                return "\(e["addresses"]?.array?.first?.string ?? "?"):\(slice["ports"]?.array?.first?["port"]?.int ?? 0) \(flags.joined())"
            }
        }.sorted()
    }

    /// The controller converges asynchronously; wait (bounded) for the expected state.
    func eventually(_ store: Store, _ service: String, _ expected: [String]) async -> [String] {
        let deadline = Date().addingTimeInterval(60)  // generous: every suite shares the cooperative pool, and a loaded start held it 20 s once
        while endpoints(store, service) != expected && Date() < deadline { try? await Task.sleep(for: .milliseconds(10)) }
        return endpoints(store, service)
    }

    @Test func aLargeServiceIsCutIntoSlicesOfAHundredAndAPodsChangeRewritesOne() throws {
        let store = Store()
        let controller = EndpointSliceController(store: store)
        try store.create("services", service("big", selector: ["app": "big"]))
        for i in 0..<250 {
            try store.create("pods", pod("p\(i)", ip: "10.244.\(i / 200 + 1).\(i % 200 + 2)", ready: true, labels: ["app": "big"]))
        }
        let key = EndpointSliceController.Key(namespace: "default", name: "big")
        try controller.reconcile(key)
        let slices = { store.list("endpointslices.discovery.k8s.io", namespace: "default").items }
        #expect(slices().map { $0["endpoints"]?.array?.count ?? 0 }.sorted() == [50, 100, 100])
        let before = Dictionary(uniqueKeysWithValues: slices().map { ($0.name, $0.resourceVersion ?? 0) })
        // One pod turns unready: only the slice it is in is written.
        _ = try store.modify("pods", namespace: "default", name: "p7") { $0["status", default: [:]]["conditions"] = [["type": "Ready", "status": "False"]] }
        try controller.reconcile(key)
        let changed = slices().filter { before[$0.name] != $0.resourceVersion }
        #expect(changed.count == 1)
        #expect(endpoints(store, "big").filter { $0.hasSuffix("-S-") || $0.hasSuffix("--") }.count == 1)
        // Newcomers fill the slice with room before a new slice is made.
        for i in 250..<260 { try store.create("pods", pod("p\(i)", ip: "10.244.3.\(i - 240)", ready: true, labels: ["app": "big"])) }
        try controller.reconcile(key)
        #expect(slices().map { $0["endpoints"]?.array?.count ?? 0 }.sorted() == [60, 100, 100])
        #expect(Set(slices().map(\.name)) == Set(before.keys), "the same three slices")
    }

    @Test func slicesFollowPodsReadinessAndDeletion() async throws {
        let store = Store()
        let controller = EndpointSliceController(store: store)
        let running = Task { try await controller.run() }
        defer { running.cancel() }

        try store.create("services", service("web", selector: ["app": "web"]))
        try store.create("pods", pod("a", ip: "10.244.1.2", ready: true))
        try store.create("pods", pod("b", ip: "10.244.1.3", ready: false))
        try store.create("pods", pod("c", ip: nil, ready: true))                       // no IP yet: not listed
        try store.create("pods", pod("d", ip: "10.244.1.5", ready: true, labels: ["app": "db"]))  // not selected
        #expect(await eventually(store, "web", ["10.244.1.2:8080 RS-", "10.244.1.3:8080 ---"]) == ["10.244.1.2:8080 RS-", "10.244.1.3:8080 ---"])

        let slice = try #require(store.list("endpointslices.discovery.k8s.io").items.first)
        #expect(slice.labels["endpointslice.kubernetes.io/managed-by"] == EndpointSliceController.managedBy)
        #expect(slice[path: "metadata.ownerReferences"]?.array?.first?["kind"]?.string == "Service")
        #expect(slice["endpoints"]?.array?.first?[path: "targetRef.name"]?.string == "a")

        // b becomes ready; a starts terminating (serving while still Ready); then a is gone.
        try store.modify("pods", namespace: "default", name: "b") { $0["status"]?["conditions"] = [["type": "Ready", "status": "True"]] }
        try store.modify("pods", namespace: "default", name: "a") { $0["metadata"]?["deletionTimestamp"] = "2026-11-22T00:00:00Z" }
        #expect(await eventually(store, "web", ["10.244.1.2:8080 -ST", "10.244.1.3:8080 RS-"]) == ["10.244.1.2:8080 -ST", "10.244.1.3:8080 RS-"])
        // The v1 Endpoints mirror the slices: ready addresses, and the rest as not ready.
        let mirrored = store.get("endpoints", namespace: "default", name: "web")?["subsets"]?.array?.first
        #expect(mirrored?["addresses"]?.array?.compactMap { $0["ip"]?.string } == ["10.244.1.3"])
        #expect(mirrored?["notReadyAddresses"]?.array?.compactMap { $0["ip"]?.string } == ["10.244.1.2"])
        #expect(mirrored?["ports"]?.array?.first?["port"]?.int == 8080)
        try store.delete("pods", namespace: "default", name: "a")
        // A pod relabelled out of the selector leaves the slice too.
        try store.modify("pods", namespace: "default", name: "b") { $0.labels = ["app": "other"] }
        #expect(await eventually(store, "web", []) == [])

        try store.delete("services", namespace: "default", name: "web")
        let deadline = Date().addingTimeInterval(60)  // generous: every suite shares the cooperative pool, and a loaded start held it 20 s once
        while (!store.list("endpointslices.discovery.k8s.io").items.isEmpty || store.get("endpoints", namespace: "default", name: "web") != nil)
            && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(store.list("endpointslices.discovery.k8s.io").items.isEmpty)
        #expect(store.get("endpoints", namespace: "default", name: "web") == nil)
    }

    @Test func aStormOfReadinessChangesIsGatheredIntoFewWritesAndHeadlessSlicesAreLabelled() async throws {
        let store = Store()
        let controller = EndpointSliceController(store: store)
        let running = Task { try await controller.run() }
        defer { running.cancel() }
        var headless = service("db", selector: ["app": "db"])
        headless["spec"]?["clusterIP"] = "None"
        try store.create("services", headless)
        try store.create("services", service("web", selector: ["app": "web"]))
        try store.create("pods", pod("w0", ip: "10.244.1.2", ready: true))
        try store.create("pods", pod("d0", ip: "10.244.2.2", ready: true, labels: ["app": "db"]))
        #expect(await eventually(store, "web", ["10.244.1.2:8080 RS-"]) == ["10.244.1.2:8080 RS-"])
        #expect(await eventually(store, "db", ["10.244.2.2:8080 RS-"]) == ["10.244.2.2:8080 RS-"])
        // The cluster DNS watches only headless Services' slices, by this label (upstream's).
        let slices = store.list("endpointslices.discovery.k8s.io").items
        #expect(slices.filter { $0.labels[EndpointSliceController.headless] != nil }.map { $0.labels["kubernetes.io/service-name"] } == ["db"])

        // 40 pods become ready one after another: every change arrives, in a handful of writes
        // (a half-second batch each), not 40 — every proxy decodes each write.
        let writes = try store.watch(WatchFilter("endpointslices.discovery.k8s.io", labels: LabelSelector(matchLabels: ["kubernetes.io/service-name": "web"])))
        let count = Mutex(0)
        let counted = Task { for try await _ in writes { count.withLock { $0 += 1 } } }
        let began = ContinuousClock.now
        for i in 1...40 {
            try store.create("pods", pod("w\(i)", ip: "10.244.1.\(i + 2)", ready: true))
            try await Task.sleep(for: .milliseconds(10))
        }
        // At most one write per half second while they came (and one to finish): on a loaded
        // machine the 40 creations take longer than 0.4 s, and the bound grows with them.
        let window = began.duration(to: .now) / .milliseconds(500)
        let bound = Int(window.rounded(.up)) + 3
        let expected = (0...40).map { "10.244.1.\($0 + 2):8080 RS-" }.sorted()
        #expect(await eventually(store, "web", expected) == expected)
        try await Task.sleep(for: .milliseconds(700))
        counted.cancel()
        let n = count.withLock { $0 }
        #expect(n >= 1 && n <= min(bound, 39), "slice writes for 40 pods: \(n) (bound \(bound))")
    }

    @Test func namedPortsResolvePerPodAndNotReadyCanBePublished() async throws {
        let store = Store()
        let controller = EndpointSliceController(store: store)
        let running = Task { try await controller.run() }
        defer { running.cancel() }
        try store.create("pods", pod("old", ip: "10.244.2.2", ready: false, port: 8080))
        try store.create("pods", pod("new", ip: "10.244.2.3", ready: false, port: 9090))
        try store.create("services", service("named", selector: ["app": "web"], targetPort: "web", publishNotReady: true))
        let expected = ["10.244.2.2:8080 RS-", "10.244.2.3:9090 RS-"]
        #expect(await eventually(store, "named", expected) == expected)
        #expect(store.list("endpointslices.discovery.k8s.io").items.count == 2)  // one per port set

        // A Service without a selector is left alone (its endpoints are the user's).
        try store.create("services", service("manual", selector: nil))
        try await Task.sleep(for: .milliseconds(100))
        #expect(endpoints(store, "manual").isEmpty)
        #expect(store.get("endpoints", namespace: "default", name: "manual") == nil)
    }
}
