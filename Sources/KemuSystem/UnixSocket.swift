import CKemuShim
import Glibc

/// Stream sockets on a filesystem path, for processes of one machine whatever their network
/// namespaces (a container's stdin, fed by the API server's attach). Blocking, close-on-exec.
public enum UnixSocket {
    /// Listening at `path` (a stale socket file there is replaced), mode 0600.
    public static func listen(path: String, backlog: Int32 = 4) throws -> Int32 {
        let fd = try syscall("socket", path) { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        do {
            unlink(path)
            try withAddress(path) { address, length in _ = try syscall("bind", path) { bind(fd, address, length) } }
            chmod(path, 0o600)
            _ = try syscall("listen", path) { Glibc.listen(fd, backlog) }
            return fd
        } catch {
            close(fd)
            throw error
        }
    }

    public static func connect(path: String) throws -> Int32 {
        let fd = try syscall("socket", path) { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        do {
            try withAddress(path) { address, length in _ = try syscall("connect", path) { Glibc.connect(fd, address, length) } }
            return fd
        } catch {
            close(fd)
            throw error
        }
    }

    static func withAddress(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) throws -> Void) throws {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity else {
            throw SystemError("bind", path, errno: ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in bytes.enumerated() { raw[i] = byte }
        }
        try withUnsafePointer(to: &address) { pointer in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }

    /// pipe2(O_CLOEXEC): both ends close-on-exec from the start.
    public static func pipe(for what: String) throws -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        _ = try syscall("pipe2", what) { kemu_pipe_cloexec(&fds) }
        return (fds[0], fds[1])
    }
}
