import Foundation
import KemuNetwork
import KemuSystem
import Testing

/// The `kemu net` commands as a user runs them.
@Suite(.serialized, .enabled(if: isRoot, "creates network namespaces: run as root"))
struct CLITests {
    @Test func upPodExecStatusDownThroughTheBinary() throws {
        let kemu = try kemuBinary()
        defer { _ = try? run([kemu, "net", "down", "--cluster", "rcli"]) }
        _ = try run([kemu, "net", "down", "--cluster", "rcli"])
        let up = try run([kemu, "net", "up", "-f", "\(packageRoot)/configs/cluster.yaml", "--cluster", "rcli"])
        #expect(up.status == .exited(0), "\(up.output)")
        #expect(up.output.contains("node-2  cbr0    bridge  up     -       10.244.2.1/24"))
        let pod = try run([kemu, "net", "pod", "add", "--cluster", "rcli", "--node", "node-2", "web"])
        #expect(pod.output == "pod web on node-2: 10.244.2.2 via 10.244.2.1 (netns kemu-rcli-p-web)\n")

        let exec = try run([kemu, "net", "exec", "--cluster", "rcli", "web", "--", "cat", "/sys/class/net/eth0/mtu"])
        #expect(exec.status == .exited(0) && exec.output == "1500\n")
        #expect(try run([kemu, "net", "exec", "--cluster", "rcli", "node-1", "--", "sh", "-c", "exit 7"]).status == .exited(7))
        let missing = try run([kemu, "net", "exec", "--cluster", "rcli", "web", "--", "no-such-command"])
        #expect(missing.status == .exited(127) && missing.output.contains("spawn no-such-command in kemu-rcli-p-web"))
        let ghost = try run([kemu, "net", "exec", "--cluster", "rcli", "ghost", "--", "true"])
        #expect(ghost.status != .exited(0) && ghost.output.contains("no namespace ghost"))

        let status = try run([kemu, "net", "status", "--cluster", "rcli"])
        #expect(status.output.contains("node-2  veth") && status.output.contains("10.244.1.0/24 via 172.31.0.11 dev eth0 proto static"))

        let down = try run([kemu, "net", "down", "--cluster", "rcli"])
        #expect(down.output.contains("removed 7 namespaces"))
        #expect(namespaces(of: "rcli").isEmpty)
    }

    @Test func badInputNamesTheFieldAndBuildsNothing() throws {
        let kemu = try kemuBinary()
        let file = NSTemporaryDirectory() + "kemu-bad-\(getpid()).yaml"
        try "name: rbadcfg\nnodes: 3\nnetwork:\n  podCIDR: 10.244.0.0/23\n  fabricCIDR: 172.31.0.0/33\n".write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let bad = try run([kemu, "net", "up", "-f", file])
        #expect(bad.status == .exited(1))
        #expect(bad.output.contains("network.fabricCIDR: \"172.31.0.0/33\" is not an IPv4 CIDR"))
        #expect(namespaces(of: "rbadcfg").isEmpty)

        let long = try run([kemu, "net", "up", "--cluster", "my-lab"])
        #expect(long.status == .exited(1) && long.output.contains("--cluster") && long.output.contains("name: \"my-lab\""))
    }

    @Test func downCleansUpAfterACrashWithNoStateLeft() throws {
        let kemu = try kemuBinary()
        // What a crash mid-way through `up` or `pod add` leaves: namespaces and /etc/netns entries,
        // no state directory, no record of what was made.
        for host in ["fabric", "node-1", "p-web"] { try NetworkNamespace.create("kemu-rcrash-\(host)") }
        try NetworkNamespace("kemu-rcrash-p-gone").writeEtcFile("resolv.conf", "nameserver 10.96.0.10\n")
        #expect(!FileSystem.exists("/run/kemu/rcrash"))
        let down = try run([kemu, "net", "down", "--cluster", "rcrash"])
        #expect(down.status == .exited(0) && down.output.contains("removed 3 namespaces"))
        #expect(namespaces(of: "rcrash").isEmpty)
        #expect(!FileSystem.exists("/etc/netns/kemu-rcrash-p-gone"))
    }

    @Test func withoutRootNothingIsTouched() throws {
        let kemu = try kemuBinary()
        // setpriv drops to nobody; the binary must be reachable for it.
        let result = try run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", kemu, "net", "up", "--cluster", "rnoroot"])
        if result.output.contains("Permission denied") && !result.output.contains("needs root") {
            // The checkout is not readable by nobody (e.g. under /root): check the message path directly.
            Issue.record("cannot run kemu as nobody here: \(result.output)")
            return
        }
        #expect(result.status == .exited(1))
        #expect(result.output.contains("kemu net up needs root"))
        let up = try run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", kemu, "up", "--cluster", "rnoroot"])
        #expect(up.status == .exited(1) && up.output.contains("kemu up needs root"), "\(up.output)")
        #expect(namespaces(of: "rnoroot").isEmpty)
        #expect(!FileSystem.exists("/run/kemu/rnoroot"))
    }
}
