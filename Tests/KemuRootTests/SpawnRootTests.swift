import Glibc
import KemuSystem
import Testing

@Suite(.enabled(if: isRoot, "sets a negative niceness: run as root"))
struct SpawnRootTests {
    /// kemu's daemons and containers each lead a session, and where the kernel schedules by
    /// autogroup the CPU is shared between sessions before niceness is looked at: the API server
    /// at −10 waited seconds behind 1,000 starting pods at +10. The niceness must reach the
    /// session's autogroup to count.
    @Test func nicenessCountsAgainstOtherSessions() throws {
        errno = 0
        let base = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
        for nice: Int32 in [-10, 10] {
            var options = Spawn.Options()
            options.newSession = true
            options.nice = nice
            let pid = try Spawn.spawn(["sleep", "30"], options)
            defer {
                _ = try? Spawn.signal(pid, SIGKILL)
                _ = try? Spawn.wait(pid)
            }
            let expected = max(-20, min(19, base + nice))
            #expect(getpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(pid)) == expected)
            // Kernels without CONFIG_SCHED_AUTOGROUP share the CPU by thread niceness alone.
            if FileSystem.exists("/proc/self/autogroup") {
                #expect(try FileSystem.readFile("/proc/\(pid)/autogroup").hasSuffix(" nice \(expected)\n"))
            }
        }
    }
}
