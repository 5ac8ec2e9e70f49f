import Foundation
import Glibc
import KemuIP
import KemuNetlink
import KemuNetwork
import KemuSystem
import Testing

/// Real namespaces, real links, real TCP. Each test builds its own cluster and removes it in defer.
@Suite(.serialized, .enabled(if: isRoot, "creates network namespaces: run as root"))
struct ClusterNetworkRootTests {
    @Test func podsOnTwoNodesReachEachOtherAndTheirNodes() throws {
        let network = try upCluster("rtcp")
        defer { _ = try? ClusterNetwork.teardown(cluster: "rtcp") }
        let a = try network.addPod("a", node: "node-1")
        let b = try network.addPod("b", node: "node-2")
        let c = try network.addPod("c", node: "node-1")

        // pod (node-1) → pod (node-2): routed across the fabric, no NAT — the server sees a's IP.
        let across = try TCP.exchange(from: a.namespace, server: b.namespace, ip: b.ip.description, port: 7001)
        #expect(across.peer == a.ip.description)
        #expect(across.reply == "kemu-rtcp-p-b got 'hello from kemu-rtcp-p-a'")
        // pod → pod on the same node, through cbr0.
        #expect(try TCP.exchange(from: c.namespace, server: a.namespace, ip: a.ip.description, port: 7002).peer == c.ip.description)
        // node → pod on another node.
        #expect(try TCP.exchange(from: "kemu-rtcp-node-1", server: b.namespace, ip: b.ip.description, port: 7003).peer == "172.31.0.11")
        // client (an outside machine) → node.
        #expect(try TCP.exchange(from: "kemu-rtcp-client", server: "kemu-rtcp-node-2", ip: "172.31.0.12", port: 7004).peer == "172.31.0.3")
        // pod → the control-plane host.
        #expect(try TCP.exchange(from: b.namespace, server: "kemu-rtcp-cp", ip: "172.31.0.2", port: 7005).peer == b.ip.description)

        // A process started in the pod sees the pod's own resolv.conf and links.
        let resolv = try run(["cat", "/etc/resolv.conf"], in: a.namespace)
        #expect(resolv.status == .exited(0))
        #expect(resolv.output.contains("nameserver 10.96.0.10"))
        #expect(try run(["ls", "/sys/class/net"], in: a.namespace).output.split(separator: "\n") == ["eth0", "lo"])
        // IPv4 only on the pod's link, but lo keeps ::1 for programs that bind [::] or localhost.
        let v6 = try run(["sh", "-c", "cat /proc/sys/net/ipv6/conf/eth0/disable_ipv6 /proc/sys/net/ipv6/conf/lo/disable_ipv6"], in: a.namespace)
        #expect(v6.output == "1\n0\n")
    }

    @Test func downRemovesEveryNamespaceFileAndProcess() throws {
        let hostBefore = try RouteSocket.open(in: nil).snapshot()
        let network = try upCluster("rdown")
        var cleaned = false
        defer { if !cleaned { _ = try? ClusterNetwork.teardown(cluster: "rdown") } }
        let pod = try network.addPod("sleeper", node: "node-2")
        var options = Spawn.Options(namespace: NetworkNamespace(pod.namespace))
        options.newSession = true
        let pid = try Spawn.spawn(["sleep", "300"], options)
        #expect(NetworkNamespace(pod.namespace).pids() == [pid])
        #expect(FileSystem.exists("/etc/netns/\(pod.namespace)/resolv.conf"))

        let report = try ClusterNetwork.teardown(cluster: "rdown")
        cleaned = true
        #expect(report.killedProcesses == [pid])
        #expect(kill(pid, 0) != 0 && errno == ESRCH, "the pod's process is gone")
        #expect(namespaces(of: "rdown").isEmpty)
        #expect(FileSystem.list("/etc/netns").filter { $0.hasPrefix("kemu-rdown-") }.isEmpty)
        #expect(!FileSystem.exists("/run/kemu/rdown"))
        // The host's own links, addresses and routes were never touched.
        #expect(try RouteSocket.open(in: nil).snapshot() == hostBefore)
        // A second down is a no-op, not an error.
        #expect(try ClusterNetwork.teardown(cluster: "rdown").namespaces.isEmpty)
    }

    @Test func nodesJoinAndLeaveARunningCluster() throws {
        let network = try upCluster("rnode")
        defer { _ = try? ClusterNetwork.teardown(cluster: "rnode") }
        let a = try network.addPod("a", node: "node-1")
        try network.addNode("node-3")
        let edge = try network.addPod("edge", node: "node-3")
        #expect(edge.ip.description == "10.244.3.2")
        #expect(try TCP.exchange(from: a.namespace, server: edge.namespace, ip: edge.ip.description, port: 7101).peer == a.ip.description)
        #expect(try TCP.exchange(from: edge.namespace, server: a.namespace, ip: a.ip.description, port: 7102).peer == edge.ip.description)

        try network.removeNode("node-3")
        #expect(!NetworkNamespace("kemu-rnode-node-3").exists && !NetworkNamespace(edge.namespace).exists)
        let node1 = try RouteSocket.open(in: NetworkNamespace("kemu-rnode-node-1")).snapshot()
        #expect(!node1.routes.contains { $0.destination.description == "10.244.3.0/24" })
        let fabric = try RouteSocket.open(in: NetworkNamespace("kemu-rnode-fabric")).snapshot()
        #expect(fabric.link("node-3") == nil)
        // The rest still works.
        let b = try network.addPod("b", node: "node-2")
        #expect(try TCP.exchange(from: a.namespace, server: b.namespace, ip: b.ip.description, port: 7103).peer == a.ip.description)
    }

    @Test func badRequestsLeaveTheClusterAsItWas() throws {
        let network = try upCluster("rbad")
        defer { _ = try? ClusterNetwork.teardown(cluster: "rbad") }
        let a = try network.addPod("a", node: "node-1")
        let before = namespaces(of: "rbad")

        let again = try ClusterNetwork(config: network.config)
        #expect((#expect(throws: KemuError.self) { try again.up() })?.code == .exists)
        #expect((#expect(throws: KemuError.self) { try network.addPod("a", node: "node-2") })?.code == .exists)
        #expect((#expect(throws: KemuError.self) { try network.addPod("x", node: "node-7") })?.code == .notFound)
        // A namespace that is in the way: the pod add fails and takes back its address and record.
        try NetworkNamespace.create("kemu-rbad-p-blocked")
        #expect((#expect(throws: KemuError.self) { try network.addPod("blocked", node: "node-1") })?.code == .exists)
        try NetworkNamespace("kemu-rbad-p-blocked").delete()
        #expect(namespaces(of: "rbad") == before)
        #expect(try network.pods().map(\.name) == ["a"])
        #expect(try network.addPod("b", node: "node-1").ip.description == "10.244.1.3")
        #expect(try TCP.exchange(from: "kemu-rbad-node-2", server: a.namespace, ip: a.ip.description, port: 7201).peer == "172.31.0.12")
    }

    @Test func aPodRemovedAndAddedAgainAtOnceIsReachableEveryTime() throws {
        let network = try upCluster("rchurn")
        defer { _ = try? ClusterNetwork.teardown(cluster: "rchurn") }
        let client = try network.addPod("client", node: "node-2")
        // The gateway's MAC is its own, not its lowest port's: pods coming and going never move it
        // (the pods' ARP entries for 10.244.i.1 would point nowhere).
        let gatewayMAC = { try? run(["ip", "-n", "kemu-rchurn-node-1", "-br", "link", "show", "cbr0"]).output.split(separator: " ", omittingEmptySubsequences: true).dropFirst(2).first.map(String.init) }
        #expect(gatewayMAC() == "0a:58:0a:f4:01:01")
        // Where br_netfilter is loaded, the cluster's bridges do not call iptables.
        if FileManager.default.fileExists(atPath: "/proc/sys/net/bridge/bridge-nf-call-iptables") {
            for ns in ["kemu-rchurn-node-1", "kemu-rchurn-fabric"] {
                #expect(try run(["ip", "netns", "exec", ns, "sysctl", "-n", "net.bridge.bridge-nf-call-iptables"]).output == "0\n")
            }
        }
        for round in 0..<20 {
            // Same name, same node, same address, same veth name: the previous incarnation's veth
            // may not be freed yet when the next one is made.
            let web = try network.addPod("web", node: "node-1")
            #expect(web.ip.description == "10.244.1.2")
            let seen = try TCP.exchange(from: client.namespace, server: web.namespace, ip: web.ip.description, port: UInt16(7300 + round))
            #expect(seen.peer == client.ip.description && seen.reply.hasPrefix("kemu-rchurn-p-web got"))
            #expect(gatewayMAC() == "0a:58:0a:f4:01:01")
            try network.removePod("web")
            #expect(!NetworkNamespace(web.namespace).exists)
        }
        // Once the kernel has caught up, node-1 carries no trace of the 20 incarnations.
        let node1 = NetworkNamespace("kemu-rchurn-node-1")
        let deadline = Date().addingTimeInterval(2)
        while try RouteSocket.open(in: node1).snapshot().links.count > 3, Date() < deadline { usleep(10_000) }
        #expect(try RouteSocket.open(in: node1).snapshot().links.map(\.name) == ["cbr0", "eth0", "lo"])
    }

    @Test func netlinkVerbsAgainstTheKernel() throws {
        let name = "kemu-rverbs-scratch"
        _ = try? NetworkNamespace(name).delete()
        try NetworkNamespace.create(name)
        defer { _ = try? NetworkNamespace(name).delete() }
        let nl = try RouteSocket.open(in: NetworkNamespace(name))
        try nl.linkAddBridge("br9", up: true)
        try nl.linkAddVeth("va", peer: "vb", peerNamespace: nil, master: "br9", up: true)
        try nl.linkSetUp("vb", true)
        try nl.linkSetMTU("vb", 1400)
        try nl.linkSetName("vb", "vc")
        try nl.addressAdd(IPv4Interface("192.0.2.1/24")!, device: "vc")
        try nl.routeAdd(Route(IPv4Network("198.51.100.0/24")!, via: IPv4Address("192.0.2.9"), device: "vc"))
        // ip route add 203.0.113.0/24 via 10.9.9.9 dev vc onlink: a gateway outside every subnet.
        try nl.routeAdd(Route(IPv4Network("203.0.113.0/24")!, via: IPv4Address("10.9.9.9"), device: "vc", onLink: true))
        try nl.linkAddVxlan("vx0", vni: 42, local: IPv4Address("192.0.2.1"), remote: IPv4Address("192.0.2.2"), port: 4789, device: "vc")
        try nl.qdiscReplaceTbf(device: "vc", bytesPerSecond: 1_250_000, burstBytes: 32_000, latencyMicroseconds: 50_000)
        var s = try nl.snapshot()
        #expect(s.link("va")?.master == "br9")
        #expect(s.link("vc")?.mtu == 1400 && s.link("vc")?.up == true && s.link("vb") == nil)
        #expect(s.link("vx0")?.kind == "vxlan")
        #expect(s.addresses(on: "vc") == [IPv4Interface("192.0.2.1/24")!])
        #expect(s.routes.map(\.description).contains("198.51.100.0/24 via 192.0.2.9 dev vc proto static"))
        #expect(s.routes.map(\.description).contains("203.0.113.0/24 via 10.9.9.9 dev vc onlink proto static"))
        let tc = try run(["tc", "qdisc", "show", "dev", "vc"], in: name).output
        #expect(tc.contains("tbf") && tc.contains("rate 10Mbit"))

        try nl.qdiscDeleteRoot(device: "vc")
        try nl.routeDelete(Route(IPv4Network("198.51.100.0/24")!, via: IPv4Address("192.0.2.9"), device: "vc"))
        try nl.addressDelete(IPv4Interface("192.0.2.1/24")!, device: "vc")
        try nl.linkSetMaster("va", nil)
        try nl.linkDelete("va")
        s = try nl.snapshot()
        #expect(s.link("va") == nil && s.link("vc") == nil)  // one veth end takes the other with it
        #expect(!s.routes.contains { $0.destination.description == "198.51.100.0/24" })

        let missing = #expect(throws: KemuError.self) { try nl.linkSetUp("nope0", true) }
        #expect(missing?.code == .notFound && missing?.message.contains("nope0") == true)
        let duplicate = #expect(throws: KemuError.self) { try nl.linkAddBridge("br9", up: false) }
        #expect(duplicate?.code == .exists && duplicate?.message.contains("ip link add br9 type bridge") == true)
    }
}
