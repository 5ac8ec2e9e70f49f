import CKemuShim
import Glibc

/// Pseudo-terminals, for commands and containers that ask for one (`kubectl exec -t`, `tty: true`).
public enum Terminal {
    /// A new pair, both ends close-on-exec: the primary end is the caller's, the secondary end
    /// the child's stdin/stdout/stderr (Spawn's `controllingTerminal`).
    public static func openPair() throws -> (primary: Int32, secondary: Int32) {
        var primary: Int32 = -1, secondary: Int32 = -1
        let err = kemu_openpty(&primary, &secondary)
        if err != 0 { throw SystemError("openpty", "/dev/ptmx", errno: err) }
        return (primary, secondary)
    }

    /// The terminal's window size (TIOCSWINSZ on either end); the foreground process gets SIGWINCH.
    public static func setSize(_ fd: Int32, rows: UInt16, columns: UInt16) {
        _ = kemu_set_window_size(fd, rows, columns)
    }
}
