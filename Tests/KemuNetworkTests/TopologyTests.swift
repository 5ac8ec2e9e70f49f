import Foundation
import KemuIP
import KemuNetlink
@testable import KemuNetwork
import KemuSystem
import Testing

/// A class, so the state directories each test makes are removed when it ends (deinit).
@Suite final class TopologyTests {
    private var directories: [String] = []

    deinit {
        for path in directories { try? FileManager.default.removeItem(atPath: path) }
    }

    func temporaryDirectory() -> String {
        let path = NSTemporaryDirectory() + "kemu-test-\(UUID().uuidString)"
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        directories.append(path)
        return path
    }

    func cluster(_ name: String = "lab", nodes: Int = 2, backend: FakeBackend = FakeBackend()) throws -> (ClusterNetwork, FakeBackend) {
        var config = ClusterConfig.named(name)
        config.nodes = (1...nodes).map { "node-\($0)" }
        return (try ClusterNetwork(config: config, backend: backend, stateDirectory: temporaryDirectory()), backend)
    }

    func routes(_ snapshot: NamespaceSnapshot?) -> [String] { snapshot?.routes.map(\.description) ?? [] }

    @Test func upBuildsTheDesignedTopology() throws {
        let (network, fake) = try cluster()
        try network.up()
        #expect(fake.namespaceNames() == ["kemu-lab-client", "kemu-lab-cp", "kemu-lab-fabric", "kemu-lab-lb",
                                          "kemu-lab-node-1", "kemu-lab-node-2"])
        let fabric = try #require(fake.snapshot("kemu-lab-fabric"))
        #expect(fabric.links.filter { $0.master == "br0" }.map(\.name) == ["client", "cp", "lb", "node-1", "node-2"])
        #expect(fabric.link("br0")?.kind == "bridge" && fabric.link("br0")?.up == true)

        let node1 = try #require(fake.snapshot("kemu-lab-node-1"))
        #expect(node1.addresses(on: "eth0").map(\.description) == ["172.31.0.11/24"])
        #expect(node1.addresses(on: "cbr0").map(\.description) == ["10.244.1.1/24"])
        #expect(node1.link("lo")?.up == true && node1.link("eth0")?.up == true)
        #expect(routes(node1) == [
            "10.244.1.0/24 dev cbr0 proto kernel",
            "10.244.2.0/24 via 172.31.0.12 dev eth0 proto static",
            "172.31.0.0/24 dev eth0 proto kernel",
        ])
        #expect(fake.state.namespaces["kemu-lab-node-1"]?.sysctls["net.ipv4.ip_forward"] == "1")
        #expect(fake.state.namespaces["kemu-lab-node-1"]?.sysctls["net.ipv4.tcp_tw_reuse"] == "1")
        // Bridged frames skip br_netfilter's iptables hooks where it is loaded.
        for ns in ["kemu-lab-node-1", "kemu-lab-fabric"] {
            #expect(fake.state.namespaces[ns]?.sysctls["net.bridge.bridge-nf-call-iptables"] == "0")
        }
        #expect(routes(fake.snapshot("kemu-lab-client")) == [
            "172.31.0.0/24 dev eth0 proto kernel", "172.31.1.0/24 via 172.31.0.4 dev eth0 proto static",
        ])
        #expect(fake.snapshot("kemu-lab-cp")?.addresses(on: "eth0").map(\.description) == ["172.31.0.2/24"])
        #expect(routes(fake.snapshot("kemu-lab-cp")) == [
            "10.244.1.0/24 via 172.31.0.11 dev eth0 proto static", "10.244.2.0/24 via 172.31.0.12 dev eth0 proto static",
            "172.31.0.0/24 dev eth0 proto kernel",
        ])
    }

    @Test func upOnAnExistingClusterChangesNothing() throws {
        let (network, fake) = try cluster()
        try network.up()
        let before = fake.state
        let error = #expect(throws: KemuError.self) { try network.up() }
        #expect(error?.code == .exists)
        #expect(error?.message.contains("kemu net down --cluster lab") == true)
        #expect(fake.state == before)
    }

    @Test(arguments: [1, 5, 12, 20, 33])
    func aFailureHalfwayThroughUpLeavesNothing(failAt: Int) throws {
        let fake = FakeBackend()
        fake.failOnOperation = failAt
        let (network, _) = try cluster(backend: fake)
        #expect(throws: KemuError.self) { try network.up() }
        #expect(fake.namespaceNames().isEmpty)
        #expect(!FileSystem.exists(network.stateDirectory))
    }

    @Test func addingAPodTouchesOnlyItsNodeAndRemovingItRestoresEverything() throws {
        let (network, fake) = try cluster()
        try network.up()
        let before = fake.state
        let pod = try network.addPod("web", node: "node-2", kubernetesNamespace: "shop")
        #expect(pod.ip.description == "10.244.2.2")
        #expect(pod.namespace == "kemu-lab-p-web")

        let after = fake.state
        let changed = Set(after.namespaces.keys).union(before.namespaces.keys).filter { after.namespaces[$0] != before.namespaces[$0] }
        #expect(changed == ["kemu-lab-node-2", "kemu-lab-p-web"])
        let node = try #require(fake.snapshot("kemu-lab-node-2"))
        #expect(node.link(pod.hostVeth)?.master == "cbr0" && node.link(pod.hostVeth)?.up == true)
        let inside = try #require(fake.snapshot("kemu-lab-p-web"))
        #expect(inside.addresses(on: "eth0").map(\.description) == ["10.244.2.2/32"])
        #expect(inside.link("eth0")?.up == true && inside.link("lo")?.up == true)
        #expect(routes(inside).contains("default via 10.244.2.1 dev eth0 proto static"))
        #expect(routes(inside).contains("10.244.2.1/32 dev eth0 proto static"))
        #expect(after.namespaces["kemu-lab-p-web"]?.etc["resolv.conf"]?.contains("search shop.svc.cluster.local") == true)

        try network.removePod("web")
        #expect(fake.state == before)
        #expect(try network.pods().isEmpty)
    }

    @Test func podAddressesAreTheLowestFreeAndReusedAfterDelete() throws {
        let (network, _) = try cluster()
        try network.up()
        let ips = try (1...3).map { try network.addPod("p\($0)", node: "node-1").ip.description }
        #expect(ips == ["10.244.1.2", "10.244.1.3", "10.244.1.4"])
        try network.removePod("p2")
        #expect(try network.addPod("p4", node: "node-1").ip.description == "10.244.1.3")
        #expect(try network.addPod("q1", node: "node-2").ip.description == "10.244.2.2")
        #expect(try network.pods().map(\.name) == ["p1", "p3", "p4", "q1"])
    }

    @Test func badPodRequestsAreRefusedWithoutLeftovers() throws {
        let (network, fake) = try cluster()
        try network.up()
        try network.addPod("web", node: "node-1")
        let before = fake.state
        #expect((#expect(throws: KemuError.self) { try network.addPod("web", node: "node-2") })?.code == .exists)
        #expect((#expect(throws: KemuError.self) { try network.addPod("api", node: "node-9") })?.code == .notFound)
        #expect((#expect(throws: KemuError.self) { try network.addPod("Bad_Name", node: "node-1") })?.code == .invalidArgument)
        #expect((#expect(throws: KemuError.self) { try network.removePod("ghost") })?.code == .notFound)
        #expect(fake.state == before)
        #expect(try network.pods().map(\.name) == ["web"])
    }

    @Test(arguments: 1...7)  // addPod makes 7 changes: fail at each one
    func aFailureHalfwayThroughAddPodLeavesNothing(failAt: Int) throws {
        let (network, fake) = try cluster()
        try network.up()
        let before = fake.state
        fake.failOnOperation = fake.operations.withLock { $0 } + failAt
        #expect(throws: KemuError.self) { try network.addPod("web", node: "node-1") }
        #expect(fake.state == before)
        #expect(try network.pods().isEmpty)
        fake.failOnOperation = nil
        #expect(try network.addPod("web", node: "node-1").ip.description == "10.244.1.2")
    }

    @Test func addingANodeAddsOneRoutePerOtherNodeAndRemovingItUndoesThat() throws {
        let (network, fake) = try cluster()
        try network.up()
        let before = fake.state
        try network.addNode("node-3")
        let after = fake.state
        let node1Routes = Set(fake.snapshot("kemu-lab-node-1")!.routes.map(\.description))
        let node1Before = before.namespaces["kemu-lab-node-1"]!.routes.map(\.description)
        #expect(node1Routes.subtracting(node1Before).subtracting(["10.244.1.0/24 dev cbr0 proto kernel", "172.31.0.0/24 dev eth0 proto kernel"])
                == ["10.244.3.0/24 via 172.31.0.13 dev eth0 proto static"])
        #expect(after.namespaces["kemu-lab-node-1"]?.links == before.namespaces["kemu-lab-node-1"]?.links)
        #expect(routes(fake.snapshot("kemu-lab-node-3")).contains("10.244.1.0/24 via 172.31.0.11 dev eth0 proto static"))
        #expect(routes(fake.snapshot("kemu-lab-cp")).contains("10.244.3.0/24 via 172.31.0.13 dev eth0 proto static"))
        #expect(network.nodes.map(\.name) == ["node-1", "node-2", "node-3"])

        try network.addPod("edge", node: "node-3")
        try network.removeNode("node-3")
        #expect(fake.state == before)
        #expect(try network.pods().isEmpty)
        // The freed index is reused, so the subnet plan stays compact.
        try network.addNode("node-4")
        #expect(fake.snapshot("kemu-lab-node-4")?.addresses(on: "cbr0").map(\.description) == ["10.244.3.1/24"])
        #expect((#expect(throws: ConfigErrors.self) { try network.addNode("node-4") })?.errors.first?.field == "nodes[3]")
    }

    @Test func stateSurvivesAcrossProcessesThroughTheStateDirectory() throws {
        let (network, fake) = try cluster()
        try network.up()
        try network.addNode("node-3")
        try network.removeNode("node-1")
        let again = try ClusterNetwork.load(cluster: "lab", backend: fake, stateDirectory: network.stateDirectory)
        #expect(again.nodes.map(\.name) == ["node-2", "node-3"])
        #expect(again.nodes.map(\.index) == [2, 3])
        #expect((#expect(throws: KemuError.self) { try ClusterNetwork.load(cluster: "nope", backend: fake, stateDirectory: "/nonexistent/kemu") })?.code == .notFound)
    }

    @Test func teardownRemovesOnlyThisCluster() throws {
        let fake = FakeBackend()
        let (a, _) = try cluster("a", backend: fake)
        let (ab, _) = try cluster("ab", backend: fake)
        try a.up()
        try ab.up()
        try a.addPod("web", node: "node-1")
        let report = try ClusterNetwork.teardown(cluster: "a", backend: fake, stateDirectory: a.stateDirectory)
        #expect(report.namespaces.first == "kemu-a-p-web")
        #expect(report.namespaces.last == "kemu-a-fabric")
        #expect(fake.namespaceNames().allSatisfy { $0.hasPrefix("kemu-ab-") })
        #expect(fake.namespaceNames().count == 6)
        #expect((#expect(throws: KemuError.self) { try ClusterNetwork.teardown(cluster: "a-b", backend: fake) })?.code == .invalidArgument)
    }

    /// The ARP table is the machine's, shared by every namespace: its limits go up with the first
    /// cluster and back to the machine's own values with the last, not before.
    @Test func theSharedNeighbourTableGrowsWithTheFirstClusterAndShrinksWithTheLast() throws {
        let fake = FakeBackend()
        let (a, _) = try cluster("a", backend: fake)
        let (b, _) = try cluster("b", backend: fake)
        let limit = "net.ipv4.neigh.default.gc_thresh3"
        try a.up()
        try b.up()
        #expect(fake.host.withLock { $0.values[limit] } == 65536)
        try ClusterNetwork.teardown(cluster: "a", backend: fake, stateDirectory: a.stateDirectory)
        #expect(fake.host.withLock { $0.values[limit] } == 65536, "cluster b still runs")
        try ClusterNetwork.teardown(cluster: "b", backend: fake, stateDirectory: b.stateDirectory)
        #expect(fake.host.withLock { $0.values } == ["net.ipv4.neigh.default.gc_thresh1": 128,
                                                   "net.ipv4.neigh.default.gc_thresh2": 512, limit: 1024])
    }
}
