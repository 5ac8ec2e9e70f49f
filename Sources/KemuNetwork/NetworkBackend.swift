import Foundation
import Glibc
import KemuNetlink
import KemuSystem

/// Everything the cluster network does to the machine: namespaces, netlink, sysctls, /etc/netns
/// files, processes. `KernelBackend` does it for real; tests substitute an in-memory fake so the
/// topology logic runs without root.
public protocol NetworkBackend: Sendable {
    /// `ip netns add NAME`; `.exists` if taken. Returns a netlink handle inside it, owned by the caller.
    func createNamespace(_ name: String) throws -> any Netlink
    /// `ip netns del NAME` and `rm -rf /etc/netns/NAME`; a missing one is fine.
    func deleteNamespace(_ name: String) throws
    /// `ip netns list`
    func namespaceNames() -> [String]
    /// A new netlink handle inside the namespace; the caller owns it.
    func netlink(_ namespace: String) throws -> any Netlink
    /// `ip netns exec NS sysctl -w KEY=VALUE`
    func setSysctl(_ namespace: String, _ key: String, _ value: String) throws
    /// Whether the kernel has the parameter (`net.bridge.*` only while br_netfilter is loaded).
    func hasSysctl(_ key: String) -> Bool
    /// Raises machine-wide kernel limits (ones that exist only outside every namespace) to at
    /// least the given values, remembering the machine's own value of each the first time.
    func raiseHostLimits(_ limits: [(key: String, atLeast: Int)]) throws
    /// Puts back what `raiseHostLimits` remembered, and forgets it, unless `inUse` (asked while
    /// no other kemu process can raise or restore) says a cluster still needs them.
    func restoreHostLimits(unless inUse: () -> Bool) throws
    /// Writes /etc/netns/NS/FILE, seen as /etc/FILE by processes in the namespace.
    func writeEtcFile(_ namespace: String, _ file: String, _ contents: String) throws
    /// Names under /etc/netns (left-overs are found there even when the namespace is gone).
    func etcNamespaceNames() -> [String]
    /// `ip netns pids NS`
    func processes(in namespace: String) -> [pid_t]
    /// kill -KILL
    func kill(_ pid: pid_t) throws
}

/// The real machine.
public struct KernelBackend: NetworkBackend {
    let thread: NamespaceThread

    public init(thread: NamespaceThread = .shared) { self.thread = thread }

    /// Also turns IPv6 off for every link made in the namespace from now on (lo keeps ::1): kemu's
    /// clusters are IPv4, and IPv6 link-local setup on each veth (DAD, router solicitations, MLD)
    /// is multicast that a node's bridge floods to every pod: O(pods²) kernel work per node.
    public func createNamespace(_ name: String) throws -> any Netlink {
        try NetworkNamespace.create(name, on: thread) {
            try Sysctl.write("net.ipv6.conf.default.disable_ipv6", "1")
            return try RouteSocket.inCurrentNamespace(name: name)
        }
    }

    public func deleteNamespace(_ name: String) throws { try NetworkNamespace(name).delete() }

    public func namespaceNames() -> [String] { NetworkNamespace.list() }

    public func netlink(_ namespace: String) throws -> any Netlink {
        try RouteSocket.open(in: NetworkNamespace(namespace), thread: thread)
    }

    public func setSysctl(_ namespace: String, _ key: String, _ value: String) throws {
        let fd = try NetworkNamespace(namespace).open()
        try thread.run(in: fd) { try Sysctl.write(key, value) }
    }

    public func hasSysctl(_ key: String) -> Bool { Sysctl.exists(key) }

    /// The machine's own values, one `key value` per line, kept until the last cluster goes.
    static let hostLimitsFile = "/run/kemu/host-limits"

    /// Raising and restoring read, change and write the saved values and the kernel's: done
    /// under an exclusive lock on /run/kemu itself (no file of its own to leave behind), so two
    /// clusters going up and down at once cannot lose the machine's own values between them.
    static func withHostLimitsLock<T>(_ body: () throws -> T) throws -> T {
        let directory = (hostLimitsFile as NSString).deletingLastPathComponent
        try FileSystem.makeDirectories(directory)
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("open", directory, errno: errno) }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0 {
            guard errno == EINTR else { throw SystemError("flock", directory, errno: errno) }
        }
        return try body()
    }

    /// The calling thread is outside every namespace (only `thread` enters them).
    public func raiseHostLimits(_ limits: [(key: String, atLeast: Int)]) throws {
        try Self.withHostLimitsLock { try raiseHostLimitsLocked(limits) }
    }

    func raiseHostLimitsLocked(_ limits: [(key: String, atLeast: Int)]) throws {
        var original = Self.savedHostLimits()
        for (key, target) in limits {
            guard let current = Sysctl.readInt(key), current < target else { continue }
            if original[key] == nil {
                original[key] = current
                try FileSystem.makeDirectories((Self.hostLimitsFile as NSString).deletingLastPathComponent)
                try FileSystem.writeFile(Self.hostLimitsFile, original.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)\n" }.joined())
            }
            try Sysctl.write(key, String(target))
        }
    }

    public func restoreHostLimits(unless inUse: () -> Bool) throws {
        try Self.withHostLimitsLock {
            if inUse() { return }
            for (key, value) in Self.savedHostLimits() { try Sysctl.write(key, String(value)) }
            try FileSystem.removeFile(Self.hostLimitsFile)
        }
    }

    static func savedHostLimits() -> [String: Int] {
        guard let text = try? FileSystem.readFile(hostLimitsFile) else { return [:] }
        var saved: [String: Int] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2, let value = Int(parts[1]) { saved[String(parts[0])] = value }
        }
        return saved
    }

    public func writeEtcFile(_ namespace: String, _ file: String, _ contents: String) throws {
        try NetworkNamespace(namespace).writeEtcFile(file, contents)
    }

    public func etcNamespaceNames() -> [String] { FileSystem.list(NetworkNamespace.etcDirectory) }

    public func processes(in namespace: String) -> [pid_t] { NetworkNamespace(namespace).pids() }

    public func kill(_ pid: pid_t) throws { try Spawn.signal(pid, SIGKILL) }
}
