import CKemuShim
import Foundation
import Glibc
import Synchronization

/// A named network namespace, kept the way iproute2 keeps them: a bind mount of the namespace at
/// `/run/netns/<name>` (so it shows in `ip netns list` and outlives every process in it), and
/// optional per-namespace files in `/etc/netns/<name>/` that processes started in it see over
/// `/etc/` (`ip netns exec` semantics).
public struct NetworkNamespace: Sendable, Hashable, CustomStringConvertible {
    public static let runDirectory = "/run/netns"
    public static let etcDirectory = "/etc/netns"

    public let name: String

    public init(_ name: String) { self.name = name }

    public var path: String { "\(Self.runDirectory)/\(name)" }
    public var etcPath: String { "\(Self.etcDirectory)/\(name)" }
    public var description: String { name }

    private static let runDirectoryReady = Mutex(false)

    /// `ip netns add NAME`. Fails with `.exists` if the name is taken.
    @discardableResult
    public static func create(_ name: String, on thread: NamespaceThread = .shared) throws -> NetworkNamespace {
        try create(name, on: thread, inside: { () -> Void in })
        return NetworkNamespace(name)
    }

    /// `ip netns add NAME`, then runs `inside` in the new namespace on the same visit of the
    /// namespace thread: the cheapest way to open the namespace's first socket.
    public static func create<T>(_ name: String, on thread: NamespaceThread = .shared, inside: () throws -> T) throws -> T {
        let ns = NetworkNamespace(name)
        try prepareRunDirectory()
        let fd: Int32
        do {
            fd = try syscall("create", ns.path) { Glibc.open(ns.path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0) }
        } catch let error as SystemError where error.errno == EEXIST {
            throw KemuError(.exists, "network namespace \(name) already exists")
        }
        close(fd)
        do {
            return try thread.createNamespace(at: ns.path, inside: inside)
        } catch {
            _ = try? ns.delete()
            throw error
        }
    }

    /// /run/netns exists and is a shared mount point, so namespaces mounted there are seen from
    /// other mount namespaces (`ip netns exec` children) too.
    private static func prepareRunDirectory() throws {
        try runDirectoryReady.withLock { ready in
            if ready { return }
            try FileSystem.makeDirectory(runDirectory, mode: 0o755)
            try check("mount --make-shared", runDirectory, kemu_make_shared_mountpoint(runDirectory))
            ready = true
        }
    }

    /// `ip netns list`: every name under /run/netns.
    public static func list() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: runDirectory)) ?? []).sorted()
    }

    public var exists: Bool { access(path, F_OK) == 0 }

    /// A descriptor for entering the namespace (`setns`) or naming it in netlink (`IFLA_NET_NS_FD`).
    public func open() throws -> FileDescriptor {
        do {
            return try FileDescriptor(opening: path)
        } catch let error as SystemError where error.errno == ENOENT {
            throw KemuError(.notFound, "network namespace \(name) does not exist")
        }
    }

    /// `ip netns del NAME`, plus its /etc/netns directory. The kernel frees the namespace, and the
    /// links in it, once no process and no open descriptor holds it any more.
    public func delete() throws {
        try removeEtcFiles()
        let err = kemu_umount_detach(path)
        if err != 0 && err != EINVAL && err != ENOENT { throw SystemError("umount", path, errno: err) }
        if unlink(path) != 0 && errno != ENOENT { throw SystemError("unlink", path, errno: errno) }
    }

    /// Writes `/etc/netns/<name>/<file>`; processes spawned in the namespace see it as `/etc/<file>`
    /// (bound at their start, so they must be started after this). Written in place, not through a
    /// rename: on a disk-backed /etc that halves the cost, and it is meant for new namespaces.
    public func writeEtcFile(_ file: String, _ contents: String) throws {
        try FileSystem.makeDirectory(Self.etcDirectory, mode: 0o755)
        try FileSystem.makeDirectory(etcPath, mode: 0o755)
        let fd = try FileDescriptor(opening: "\(etcPath)/\(file)", flags: O_WRONLY | O_CREAT | O_TRUNC)
        try fd.write(contents)
    }

    public func removeEtcFiles() throws {
        try FileSystem.removeTree(etcPath)
    }

    /// `ip netns pids NAME`: processes whose network namespace is this one.
    public func pids() -> [pid_t] {
        var target = stat()
        guard stat(path, &target) == 0 else { return [] }
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        var result: [pid_t] = []
        for entry in entries {
            guard let pid = pid_t(entry) else { continue }
            var st = stat()
            if stat("/proc/\(entry)/ns/net", &st) == 0, st.st_ino == target.st_ino, st.st_dev == target.st_dev {
                result.append(pid)
            }
        }
        return result.sorted()
    }
}

extension NetworkNamespace {
    /// A TCP socket listening on `host:port` inside this namespace (made on the namespace thread,
    /// so it stays there while this process's threads stay home), close-on-exec, non-blocking (NIO
    /// accepts until EAGAIN), SO_REUSEADDR.
    /// The caller owns the returned descriptor.
    public func listeningSocket(host: String, port: Int, backlog: Int32 = 1024, on thread: NamespaceThread = .shared) throws -> Int32 {
        let namespace = try open()
        return try thread.run(in: namespace) {
            let fd = try syscall("socket", "tcp \(host):\(port) in \(name)") { socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0) }
            do {
                var one: Int32 = 1
                _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
                var address = sockaddr_in()
                address.sin_family = sa_family_t(AF_INET)
                address.sin_port = in_port_t(UInt16(port).bigEndian)
                guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else {
                    throw KemuError(.invalidArgument, "\(host) is not an IPv4 address")
                }
                try withUnsafePointer(to: &address) { pointer in
                    try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                        _ = try syscall("bind", "\(host):\(port) in \(name)") { bind(fd, sa, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                    }
                }
                _ = try syscall("listen", "\(host):\(port) in \(name)") { listen(fd, backlog) }
                return fd
            } catch {
                close(fd)
                throw error
            }
        }
    }
}

extension NetworkNamespace {
    /// A TCP connection from inside this namespace to `host:port` (a port-forward to a pod's
    /// localhost): blocking, close-on-exec. Throws the connect's error (ECONNREFUSED when nothing
    /// listens). The caller owns the descriptor.
    public func connectedSocket(host: String, port: Int, on thread: NamespaceThread = .shared) throws -> Int32 {
        let namespace = try open()
        return try thread.run(in: namespace) {
            let fd = try syscall("socket", "tcp to \(host):\(port) in \(name)") { socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
            do {
                var address = sockaddr_in()
                address.sin_family = sa_family_t(AF_INET)
                address.sin_port = in_port_t(UInt16(clamping: port).bigEndian)
                guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else {
                    throw KemuError(.invalidArgument, "\(host) is not an IPv4 address")
                }
                try withUnsafePointer(to: &address) { pointer in
                    try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                        _ = try syscall("connect", "\(host):\(port) in \(name)") { Glibc.connect(fd, sa, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                    }
                }
                return fd
            } catch {
                close(fd)
                throw error
            }
        }
    }
}

extension NetworkNamespace {
    /// Whether the calling thread is in this namespace.
    public var isCurrent: Bool {
        var mine = stat(), target = stat()
        guard stat("/proc/thread-self/ns/net", &mine) == 0, stat(path, &target) == 0 else { return false }
        return mine.st_ino == target.st_ino && mine.st_dev == target.st_dev
    }

    /// Runs this program again, with the same arguments, inside the namespace: the calling
    /// thread enters it and execs, and a new image runs in its caller's namespaces. For daemons a
    /// user may start from the host that must live in a node's namespace (`kemu proxy`).
    public func reexecInside(arguments: [String] = CommandLine.arguments) throws -> Never {
        let namespace = try open()
        try check("setns", name, kemu_setns(namespace.raw, kemu_clone_newnet) == 0 ? 0 : errno)
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        argv.append(nil)
        execv("/proc/self/exe", &argv)
        throw SystemError("exec", "/proc/self/exe", errno: errno)
    }
}
