import Foundation
import Glibc
import KemuCluster
import KemuSystem
import Testing

/// Daemons are stopped by their pid files, and only while the pid still runs what was started.
@Suite struct DaemonTests {
    /// A state directory of the test's own, with a copy of sleep(1) under `name`.
    func state(binary name: String) throws -> (ClusterFiles, String) {
        let dir = NSTemporaryDirectory() + "kemu-daemon-\(UUID().uuidString)"
        try FileSystem.makeDirectories(dir)
        try FileManager.default.copyItem(atPath: "/bin/sleep", toPath: "\(dir)/\(name)")
        return (ClusterFiles(state: dir), "\(dir)/\(name)")
    }

    /// Kills and reaps a child of this test still running (never a pid already reaped: it may be
    /// someone else's by now).
    func stopIfRunning(_ pid: pid_t) {
        guard waitpid(pid, nil, WNOHANG) == 0 else { return }
        kill(pid, SIGKILL)
        _ = waitpid(pid, nil, 0)
    }

    @Test func downStopsWhatACopyByAnotherNameStarted() throws {
        let (files, binary) = try state(binary: "kemu-dev")
        defer { try? FileSystem.removeTree(files.state) }
        let supervisor = try Daemon.start("supervisor", files, [binary, "60"], namespace: nil)
        let agent = try Daemon.start("node-node-1", files, [binary, "60"], namespace: nil)
        defer { for pid in [supervisor, agent] { stopIfRunning(pid) } }
        // Not a name `isKemu` knows: only the spec says it is this cluster's.
        #expect(!Daemon.isKemu(supervisor))
        #expect(Set(Daemon.stopAll(files)) == ["supervisor", "node-node-1"])
        for pid in [supervisor, agent] {
            // Gone: reaped by the stop (our child), or a zombie for us to reap, at most a moment
            // on (a process on its way out has no command line before it is a zombie; 2 s at most,
            // far less than the sleep's 60).
            var gone = false
            for _ in 0..<400 where !gone {
                gone = waitpid(pid, nil, WNOHANG) == pid || kill(pid, 0) != 0
                if !gone { usleep(5_000) }
            }
            #expect(gone, "pid \(pid) still runs")
        }
    }

    @Test func aPidThatRunsSomethingElseIsLeftAlone() throws {
        let (files, binary) = try state(binary: "kemu-dev")
        defer { try? FileSystem.removeTree(files.state) }
        let pid = try Daemon.start("server", files, [binary, "60"], namespace: nil)
        defer { stopIfRunning(pid) }
        // The spec now names another binary: the pid is someone else's (recycled), not signalled.
        try FileSystem.writeFile("\(files.state)/server.spec.json", #"{"argv": ["/usr/bin/kemu-other", "server"], "namespace": null}"#)
        #expect(Daemon.stop("server", files) == nil)
        #expect(kill(pid, 0) == 0 && waitpid(pid, nil, WNOHANG) == 0, "a process that is not the daemon was signalled")
    }
}
