import Foundation
import KemuNetlink
import KemuNetwork
import KemuSystem
import Testing

/// netns-scripts/ are the readable reference: building with them and with kemu must give the same
/// links, addresses and routes in every namespace.
@Suite(.serialized, .enabled(if: isRoot, "creates network namespaces: run as root"))
struct ScriptsMatchKemuTests {
    func script(_ name: String, _ args: [String]) throws {
        let result = try run(["bash", "\(packageRoot)/netns-scripts/\(name)"] + args)
        #expect(result.status == .exited(0), "\(name) \(args): \(result.output)")
    }

    /// Every namespace of the cluster, keyed by host (prefix stripped).
    func snapshots(_ cluster: String) throws -> [String: NamespaceSnapshot] {
        var result: [String: NamespaceSnapshot] = [:]
        for namespace in namespaces(of: cluster) {
            result[String(namespace.dropFirst("kemu-\(cluster)-".count))] = try RouteSocket.open(in: NetworkNamespace(namespace)).snapshot()
        }
        return result
    }

    @Test func scriptsAndKemuBuildIdenticalNetworks() throws {
        defer {
            _ = try? run(["bash", "\(packageRoot)/netns-scripts/down.sh", "rscr"])
            _ = try? ClusterNetwork.teardown(cluster: "rkemu")
        }
        try script("up.sh", ["rscr", "3"])
        try script("up.sh", ["rscr", "3"])  // idempotent
        try script("pod.sh", ["add", "rscr", "1", "web", "10.244.1.2"])
        try script("pod.sh", ["add", "rscr", "3", "db", "10.244.3.2"])
        let scripted = try snapshots("rscr")

        let network = try upCluster("rkemu", nodes: 3)
        try network.addPod("web", node: "node-1")
        try network.addPod("db", node: "node-3")
        let built = try snapshots("rkemu")

        #expect(scripted.keys.sorted() == ["client", "cp", "fabric", "lb", "node-1", "node-2", "node-3", "p-db", "p-web"])
        #expect(built.keys.sorted() == scripted.keys.sorted())
        for host in scripted.keys.sorted() {
            #expect(built[host]?.links == scripted[host]?.links, "links of \(host)")
            #expect(built[host]?.addresses == scripted[host]?.addresses, "addresses of \(host)")
            #expect(built[host]?.routes == scripted[host]?.routes, "routes of \(host)")
        }
        for file in ["resolv.conf", "hosts"] {
            #expect(try FileSystem.readFile("/etc/netns/kemu-rscr-p-web/\(file)") == FileSystem.readFile("/etc/netns/kemu-rkemu-p-web/\(file)"))
        }

        try script("pod.sh", ["del", "rscr", "1", "web"])
        try network.removePod("web")
        // kemu leaves freeing the pod's veth pair to the kernel, which does it with the namespace,
        // asynchronously and batched (the script's `ip link del` waits a grace period instead).
        let deadline = Date().addingTimeInterval(2)
        while try snapshots("rscr") != snapshots("rkemu"), Date() < deadline { usleep(10_000) }
        #expect(try snapshots("rscr") == snapshots("rkemu"))
        try script("down.sh", ["rscr"])
        #expect(namespaces(of: "rscr").isEmpty)
    }
}
