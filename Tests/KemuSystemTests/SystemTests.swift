import Foundation
import Glibc
import KemuIP
import KemuSystem
import Testing

/// The syscall layer's small pieces, without root: addresses parsed from text, errors that name
/// the operation, and files written whole or not at all.
@Suite struct SystemTests {
    @Test func socketAddressesParseWithoutTrustingTheirInput() {
        #expect(SocketAddress("10.96.0.10:53")?.description == "10.96.0.10:53")
        #expect(SocketAddress("10.96.0.10:65535")?.port == 65535)
        for bad in ["", "10.96.0.10", "10.96.0.10:", ":53", "10.96.0.10:65536", "10.96.0.10:-1", "10.96.0.10:53:1", "999.1.1.1:80",
                    "10.96.0.10:99999999999999999999999", "host:80", "10.96.0.10: 53"] {
            #expect(SocketAddress(bad) == nil, "\(bad)")
        }
    }

    @Test func aFailedCallNamesWhatItDidAndTo() {
        do {
            _ = try FileSystem.readFile("/nonexistent/kemu-test")
            Issue.record("read a file that does not exist")
        } catch let error as SystemError {
            #expect(error.errno == ENOENT)
            #expect("\(error)".contains("/nonexistent/kemu-test") && "\(error)".contains("No such file"))
        } catch {
            Issue.record("unexpected \(error)")
        }
        let error = KemuError(.notFound, "cluster x is not up", cause: SystemError("open", "/run/kemu/x/network.json", errno: ENOENT))
        #expect(error.description == "cluster x is not up: open /run/kemu/x/network.json: No such file or directory")
    }

    @Test func filesAreReplacedWholeWithTheirMode() throws {
        let dir = NSTemporaryDirectory() + "kemu-fs-\(UUID().uuidString)"
        defer { try? FileSystem.removeTree(dir) }
        try FileSystem.makeDirectories("\(dir)/a/b", mode: 0o700)
        try FileSystem.writeFile("\(dir)/a/b/f", "one", mode: 0o600)
        try FileSystem.writeFile("\(dir)/a/b/f", "two", mode: 0o600)
        #expect(try FileSystem.readFile("\(dir)/a/b/f") == "two")
        #expect(FileSystem.list("\(dir)/a/b") == ["f"], "no temporary file left beside it")
        var info = stat()
        #expect(stat("\(dir)/a/b/f", &info) == 0 && info.st_mode & 0o777 == 0o600)
        #expect(try FileSystem.createExclusive("\(dir)/claim", "x"))
        #expect(try !FileSystem.createExclusive("\(dir)/claim", "y"))
        try FileSystem.removeFile("\(dir)/nothing-here")  // rm -f: not an error
    }

    /// top -H and perf tell kemu's threads apart: the kernel knows each by its name's first 15 bytes.
    @Test func threadsCarryTheirNamesToTheKernel() async {
        let seen = await withCheckedContinuation { (heard: CheckedContinuation<String, Never>) in
            startThread(named: "kemu-policy-drops") {
                heard.resume(returning: (try? FileSystem.readFile("/proc/thread-self/comm")) ?? "unreadable")
            }
        }
        #expect(seen == "kemu-policy-dro\n")
    }
}

/// Who spawned processes run as: capability names as Kubernetes writes them, and a process's
/// identity read back from /proc.
@Suite struct ProcessIdentityTests {
    @Test func capabilitiesByNameAddDropAndAll() {
        let base = CapabilitySet.containerDefault
        #expect(base.contains("NET_BIND_SERVICE") && base.contains("CAP_KILL") && !base.contains("SYS_ADMIN") && !base.contains("NET_ADMIN"))
        let added = base.adding(["NET_ADMIN", "cap_sys_time"], dropping: ["KILL"])
        #expect(added.contains("NET_ADMIN") && added.contains("SYS_TIME") && !added.contains("KILL"))
        #expect(base.adding([], dropping: ["ALL"]) == .none)
        #expect(base.adding(["NET_RAW"], dropping: ["ALL"]).description == "NET_RAW")
        #expect(base.adding(["ALL"], dropping: []) == .all)
        #expect(base.adding(["NOT_A_CAPABILITY"], dropping: []) == base)
        #expect(CapabilitySet.number(of: "CHECKPOINT_RESTORE") == 40 && CapabilitySet.number(of: "bogus") == nil)
    }

    @Test func aProcessIdentityIsReadFromProc() throws {
        let me = try #require(ProcessIdentity.of(process: getpid()))
        #expect(me.user == geteuid() && me.group == getegid())
        #expect(ProcessIdentity.of(process: -1) == nil)
        #expect(ProcessIdentity.of(process: 0x7fff_fff0) == nil)
    }
}
