import Foundation
import Glibc

/// Who a spawned process runs as: its user, group and supplementary groups, and the capabilities
/// it can ever hold (its bounding set). What a container runtime applies from a container's
/// `securityContext`.
public struct ProcessIdentity: Sendable, Equatable, CustomStringConvertible {
    public var user: UInt32
    public var group: UInt32
    public var groups: [UInt32]
    public var capabilities: CapabilitySet
    /// No setuid program or file capability can raise the process's privileges
    /// (`allowPrivilegeEscalation: false`).
    public var noNewPrivileges: Bool

    public init(user: UInt32, group: UInt32, groups: [UInt32] = [], capabilities: CapabilitySet = .containerDefault,
                noNewPrivileges: Bool = false) {
        self.user = user
        self.group = group
        self.groups = groups
        self.capabilities = capabilities
        self.noNewPrivileges = noNewPrivileges
    }

    public var description: String {
        "uid=\(user) gid=\(group)" + (groups.isEmpty ? "" : " groups=\(groups.map(String.init).joined(separator: ","))")
    }

    /// The identity a running process has (`/proc/PID/status`), so that a command run inside its
    /// container runs as it does. nil when the process is gone or its status cannot be read.
    public static func of(process pid: pid_t) -> ProcessIdentity? {
        guard let status = try? FileSystem.readFile("/proc/\(pid)/status") else { return nil }
        var fields: [Substring: [Substring]] = [:]
        for line in status.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[line[..<colon]] = line[line.index(after: colon)...].split(whereSeparator: { $0 == " " || $0 == "\t" })
        }
        // Real, effective, saved, filesystem: the effective one is who the process acts as.
        guard let uids = fields["Uid"], uids.count >= 2, let user = UInt32(uids[1]),
              let gids = fields["Gid"], gids.count >= 2, let group = UInt32(gids[1]),
              let bounding = fields["CapBnd"]?.first, let bits = UInt64(bounding, radix: 16) else { return nil }
        return ProcessIdentity(user: user, group: group, groups: (fields["Groups"] ?? []).compactMap { UInt32($0) },
                               capabilities: CapabilitySet(bits: bits),
                               noNewPrivileges: fields["NoNewPrivs"]?.first == "1")
    }
}

/// A set of Linux capabilities, one bit each (bit n = capability n), named as Kubernetes'
/// `securityContext.capabilities` names them (`NET_ADMIN`, with or without `CAP_`; `ALL`).
public struct CapabilitySet: Sendable, Equatable, CustomStringConvertible {
    public var bits: UInt64

    public init(bits: UInt64) { self.bits = bits }

    public static let all = CapabilitySet(bits: ~0)
    public static let none = CapabilitySet(bits: 0)
    /// What containerd and Docker leave a container unless it asks otherwise.
    public static let containerDefault = CapabilitySet(names: [
        "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP", "NET_BIND_SERVICE",
        "NET_RAW", "SYS_CHROOT", "MKNOD", "AUDIT_WRITE", "SETFCAP",
    ])

    /// linux/capability.h's numbers.
    public static let numbers: [String: Int] = [
        "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6,
        "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10, "NET_BROADCAST": 11,
        "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15, "SYS_MODULE": 16, "SYS_RAWIO": 17,
        "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20, "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23,
        "SYS_RESOURCE": 24, "SYS_TIME": 25, "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29,
        "AUDIT_CONTROL": 30, "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35,
        "BLOCK_SUSPEND": 36, "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
    ]

    /// Known names only; `number(of:)` tells which are.
    init(names: [String]) {
        bits = names.reduce(0) { bits, name in bits | (Self.number(of: name).map { 1 << UInt64($0) } ?? 0) }
    }

    /// The capability's number, for `NET_ADMIN` or `CAP_NET_ADMIN` (any case); nil for an unknown name.
    public static func number(of name: String) -> Int? {
        var key = name.uppercased()
        if key.hasPrefix("CAP_") { key.removeFirst(4) }
        return numbers[key]
    }

    /// The set after a container's `capabilities.add` / `drop` (names already checked; `ALL` in
    /// either means every capability).
    public func adding(_ add: [String], dropping drop: [String]) -> CapabilitySet {
        var bits = self.bits
        if drop.contains(where: { $0.uppercased() == "ALL" }) { bits = 0 }
        for name in drop { if let n = Self.number(of: name) { bits &= ~(1 << UInt64(n)) } }
        if add.contains(where: { $0.uppercased() == "ALL" }) { bits = ~0 }
        for name in add { if let n = Self.number(of: name) { bits |= 1 << UInt64(n) } }
        return CapabilitySet(bits: bits)
    }

    public func contains(_ name: String) -> Bool {
        guard let n = Self.number(of: name) else { return false }
        return bits & (1 << UInt64(n)) != 0
    }

    public var description: String {
        Self.numbers.filter { bits & (1 << UInt64($0.value)) != 0 }.sorted { $0.value < $1.value }.map(\.key).joined(separator: ",")
    }
}

extension Spawn.Options {
    /// Options that run a command inside a running container, as `kubectl exec` does: in the
    /// network, UTS and mount namespaces of its process `pid` and as the user, groups and
    /// capabilities that process has, with the environment it started with. nil unless `pid` is
    /// alive and in the pod's network namespace `sandbox` (a stale or forged process id finds
    /// nothing).
    public static func inContainer(pid: pid_t, sandbox: NetworkNamespace) -> Spawn.Options? {
        var mine = stat(), theirs = stat()
        guard pid > 0, stat(sandbox.path, &mine) == 0, stat("/proc/\(pid)/ns/net", &theirs) == 0,
              mine.st_ino == theirs.st_ino, mine.st_dev == theirs.st_dev,
              let identity = ProcessIdentity.of(process: pid) else { return nil }
        var environment: [String: String] = [:]
        if let bytes = try? FileDescriptor(opening: "/proc/\(pid)/environ").readAll() {
            for entry in bytes.split(separator: 0) {
                let pair = String(decoding: entry, as: UTF8.self)
                guard let equals = pair.firstIndex(of: "=") else { continue }
                environment[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
            }
        }
        if environment["PATH"] == nil { environment["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" }
        var options = Spawn.Options(namespace: sandbox, environment: environment)
        options.joinProcess = pid
        // Where the container works (its workingDir), as the command's own working directory.
        options.workingDirectory = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/cwd")
        options.identity = identity
        // Held by the container's limits, as upstream's exec is.
        options.cgroupFiles = ContainerCgroup.of(process: pid)?.procsFiles ?? []
        return options
    }
}
