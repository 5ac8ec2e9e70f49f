import Foundation
import Glibc
import KemuSystem

/// tcpdump in a namespace, writing a file; `stop` ends it (SIGINT, as a user's Ctrl-C). Started
/// with kemu's own spawn, which gives the child a clean signal mask (a test thread's blocked
/// SIGINT would be inherited otherwise).
struct Capture {
    let pid: pid_t
    let file: String

    init(namespace: String, interface: String, file: String, filter: String) throws {
        self.file = file
        // Through `ip netns exec` (which execs tcpdump: the pid is tcpdump's), with kemu's spawn
        // for a clean signal mask. Immediate mode: packets still in the kernel's capture block
        // (up to a second's) would be lost when SIGINT ends it.
        var options = Spawn.Options(namespace: nil)
        let devNull = try FileDescriptor(opening: "/dev/null", flags: O_RDWR)
        (options.stdin, options.stdout, options.stderr) = (devNull.raw, devNull.raw, devNull.raw)
        pid = try Spawn.spawn(["ip", "netns", "exec", namespace, "tcpdump", "-i", interface, "-nn", "-U", "--immediate-mode", "-s", "0", "-w", file, filter], options)
        // tcpdump is listening once the file has its header.
        let deadline = Date().addingTimeInterval(5)
        var st = stat()
        while (stat(file, &st) != 0 || st.st_size == 0) && Date() < deadline { usleep(20_000) }
    }

    /// Started and stopped off Swift's cooperative pool: both wait on a process, and a blocked
    /// cooperative thread (of two, on this machine) stalls every other suite's tasks.
    static func start(namespace: String, interface: String, file: String, filter: String) async throws -> Capture {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(with: Result { try Capture(namespace: namespace, interface: interface, file: file, filter: filter) })
            }
        }
    }

    func stop() async throws -> CapturedTraffic {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(with: Result {
                    usleep(300_000)  // the last packets written
                    kill(pid, SIGINT)
                    _ = try Spawn.wait(pid)
                    return CapturedTraffic(file: file, bytes: (try? Data(contentsOf: URL(fileURLWithPath: file))).map { String(decoding: $0, as: UTF8.self) } ?? "")
                })
            }
        }
    }
}

struct CapturedTraffic {
    let file: String
    /// The capture file as text (payload bytes appear in it as they were on the wire).
    let bytes: String

    /// Packets in the capture that match a tcpdump filter.
    func count(_ filter: String) async throws -> Int {
        try await runOff(["tcpdump", "-nn", "-r", file, filter]).output.split(separator: "\n").filter { $0.contains(" IP ") }.count
    }
}

