import CKemuShim
import Glibc
import Synchronization

/// How a process ended.
public enum ProcessExit: Equatable, Sendable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)

    /// The shell's convention: the exit code, or 128 + the signal.
    public var shellCode: Int32 {
        switch self {
        case .exited(let code): code
        case .signaled(let signal): 128 + signal
        }
    }

    public var description: String {
        switch self {
        case .exited(let code): "exited with \(code)"
        case .signaled(let signal): "killed by signal \(signal)"
        }
    }
}

/// Starting processes inside network namespaces. The fork/exec half is C (`kemu_spawn`): no Swift
/// code runs in the child.
public enum Spawn {
    public struct Options: Sendable {
        /// Enter this namespace and see its /etc/netns files, as `ip netns exec` does.
        public var namespace: NetworkNamespace?
        /// With `namespace`: give the child a private mount namespace with the namespace's
        /// /etc/netns files and /sys (what `ip netns exec` does). Off for daemons that create
        /// namespaces themselves: their bind mounts under /run/netns must be seen by everyone.
        public var privateMounts = true
        public var environment: [String: String]
        public var stdin: Int32 = -1
        public var stdout: Int32 = -1
        public var stderr: Int32 = -1
        /// The child leads a new session and process group.
        public var newSession = false
        public var workingDirectory: String?
        /// With `namespace` and `privateMounts`: files and directories bound over paths (source,
        /// target, read-only), seen by the child alone. A target that does not exist is made in a
        /// private root (`privateRoot`) and skipped otherwise.
        public var bindMounts: [(source: String, target: String, readOnly: Bool)] = []
        /// With `namespace` and `privateMounts`: the child gets a root of its own, the machine's
        /// seen through an overlay whose writes stay in a tmpfs mounted on this (empty) directory
        /// in the child's mount namespace alone, gone when the child's processes are; the
        /// machine's other mount points (`Spawn.machineMountPoints()`) are bound in as they are.
        /// nil: the machine's root, shared.
        public var privateRoot: String?
        /// `cgroup.procs` files of the groups the child joins before anything else (a
        /// container's limits: `ContainerCgroup.procsFiles`).
        public var cgroupFiles: [String] = []
        /// `stdin` is a terminal (a pty's secondary end) that becomes the child's controlling
        /// terminal; needs `newSession`.
        public var controllingTerminal = false
        /// With `namespace` and `privateMounts`: a UTS namespace of the child's own with this
        /// hostname (at most 64 bytes).
        public var hostname: String?
        /// With `namespace` and `privateMounts`: directories the child sees empty (an empty
        /// read-only tmpfs over each, after the bind mounts).
        public var hiddenPaths: [String] = []
        /// Run inside the network, UTS and mount namespaces of this running process instead
        /// (`namespace` is then ignored): a command executed in a container.
        public var joinProcess: pid_t?
        /// The user, group and supplementary groups the child runs as, with only `capabilities`
        /// left in its bounding set. nil: the caller's, with every capability.
        public var identity: ProcessIdentity?
        /// Added to the child's niceness: a container runs at a lower CPU priority than the
        /// daemons that keep the cluster alive. With `newSession`, the session's autogroup gets
        /// the same niceness, so it also counts against other sessions where the kernel
        /// schedules by autogroup (Debian's does).
        public var nice: Int32 = 0

        public init(namespace: NetworkNamespace? = nil, environment: [String: String] = Spawn.inheritedEnvironment()) {
            self.namespace = namespace
            self.environment = environment
        }
    }

    public static func inheritedEnvironment() -> [String: String] {
        var result: [String: String] = [:]
        var entry = environ
        while let pointer = entry.pointee {
            let pair = String(cString: pointer)
            if let equals = pair.firstIndex(of: "=") {
                result[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
            }
            entry += 1
        }
        return result
    }

    /// Starts `argv` (argv[0] looked up in PATH) and returns its pid.
    public static func spawn(_ argv: [String], _ options: Options) throws -> pid_t {
        guard let program = argv.first, !program.isEmpty else {
            throw KemuError(.invalidArgument, "spawn: no command given")
        }
        let nsFD = try options.namespace?.open()
        let env = options.environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        let binds = options.bindMounts.flatMap { [$0.source, $0.target] }
        let readOnly = options.bindMounts.map { UInt8($0.readOnly ? 1 : 0) }
        let rootMounts = options.privateRoot == nil ? [] : machineMountPoints()
        let cgroups = try options.cgroupFiles.map { try FileDescriptor(opening: $0, flags: O_WRONLY | O_CLOEXEC) }
        let cgroupFDs = cgroups.map(\.raw)
        defer { withExtendedLifetime(cgroups) {} }  // open until the child has written itself in
        let identity = options.identity
        // Resolved while this process can still see every directory: a child whose new user cannot
        // reach the program's path (kemu's own binary under /root) executes it from a descriptor.
        let resolved = identity == nil ? nil : resolve(program, path: options.environment["PATH"])
        let groups = (identity?.groups ?? []).map { gid_t($0) }
        return try withCStrings(argv) { cArgv in
            try withCStrings(env) { cEnv in try withCStrings(binds) { cBinds in try withCStrings(options.hiddenPaths) { cHidden in
            try withCStrings(rootMounts) { cRootMounts in
                var pid: pid_t = 0
                var step = [CChar](repeating: 0, count: Int(KEMU_STEP_LEN))
                let err = withOptionalCString(options.privateMounts ? options.namespace?.name : nil) { nsName in
                    withOptionalCString(options.workingDirectory) { cwd in
                    withOptionalCString(options.hostname) { hostname in
                    withOptionalCString(resolved) { cResolved in
                    withOptionalCString(options.privateRoot) { cRoot in
                    readOnly.withUnsafeBufferPointer { cReadOnly in
                    cgroupFDs.withUnsafeBufferPointer { cCgroups in
                    groups.withUnsafeBufferPointer { cGroups in
                        var o = kemu_spawn_options(
                            netns_fd: options.joinProcess == nil ? nsFD?.raw ?? -1 : -1, netns_name: nsName,
                            stdin_fd: options.stdin, stdout_fd: options.stdout, stderr_fd: options.stderr,
                            new_session: options.newSession ? 1 : 0, cwd: cwd, binds: cBinds,
                            hostname: hostname, hidden: cHidden, join_pid: options.joinProcess ?? 0,
                            set_identity: identity == nil ? 0 : 1, uid: uid_t(identity?.user ?? 0), gid: gid_t(identity?.group ?? 0),
                            group_count: Int32(groups.count), groups: cGroups.baseAddress,
                            capabilities: identity?.capabilities.bits ?? ~0, no_new_privs: identity?.noNewPrivileges == true ? 1 : 0,
                            resolved: cResolved, nice: options.nice, root_scratch: cRoot, root_mounts: cRootMounts,
                            bind_readonly: cReadOnly.baseAddress, cgroup_fds: cCgroups.baseAddress, cgroup_count: Int32(cgroupFDs.count),
                            controlling_tty: options.controllingTerminal ? 1 : 0)
                        return kemu_spawn(program, cArgv, cEnv, &o, &pid, &step)
                    }
                    }
                    }
                    }
                    }
                    }
                    }
                }
                if err != 0 {
                    let where_ = options.namespace.map { " in \($0.name)" } ?? ""
                    let stepName = step.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
                    throw SystemError("spawn \(program)\(where_) (\(stepName))", "", errno: err)
                }
                return pid
            } } } }
        }
    }

    /// The machine's mount points a private root binds in: each outermost one but / and /sys (a
    /// namespace's child mounts sysfs afresh) and /run/netns (every pod's namespace is a mount
    /// there: a thousand pods would copy a thousand mounts into each container), read from
    /// /proc/self/mountinfo (its fifth field, with the kernel's octal escapes). Read again at
    /// most every 10 s: a node starting pods spawns many, and the machine's mounts barely change.
    public static func machineMountPoints() -> [String] {
        mountPoints.withLock { cache in
            if let cached = cache, ContinuousClock.now < cached.until { return cached.points }
            let points = readMountPoints()
            cache = (points, ContinuousClock.now + .seconds(10))
            return points
        }
    }

    private static let mountPoints = Mutex<(points: [String], until: ContinuousClock.Instant)?>(nil)

    static func readMountPoints() -> [String] {
        guard let text = try? FileSystem.readFile("/proc/self/mountinfo") else { return [] }
        var points: [String] = []
        var seen: Set<String> = []
        let skipped = ["/sys", "/run/netns", "/var/run/netns"]
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: false)
            guard fields.count > 4 else { continue }
            let point = unescapeMountField(fields[4])
            if point == "/" || skipped.contains(where: { point == $0 || point.hasPrefix($0 + "/") }) || !seen.insert(point).inserted { continue }
            points.append(point)
        }
        return points.filter { point in !points.contains { point != $0 && point.hasPrefix($0 + "/") } }
    }

    /// mountinfo's `\040`-style escapes (space, tab, newline, backslash) undone.
    static func unescapeMountField(_ field: Substring) -> String {
        var bytes: [UInt8] = []
        let raw = Array(field.utf8)
        var i = 0
        while i < raw.count {
            if raw[i] == UInt8(ascii: "\\"), i + 3 < raw.count,
               let value = UInt8(String(decoding: raw[(i + 1)...(i + 3)], as: UTF8.self), radix: 8) {
                bytes.append(value)
                i += 4
            } else {
                bytes.append(raw[i])
                i += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// `program` as execvp would find it in `path`, or nil.
    static func resolve(_ program: String, path: String?) -> String? {
        if program.contains("/") { return program }
        for directory in (path ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") where access("\(directory)/\(program)", X_OK) == 0 {
            return "\(directory)/\(program)"
        }
        return nil
    }

    /// Waits for `pid` to end.
    public static func wait(_ pid: pid_t) throws -> ProcessExit {
        var status: Int32 = 0
        try syscall("waitpid", "\(pid)") { waitpid(pid, &status, 0) }
        return decode(status)
    }


    static func decode(_ status: Int32) -> ProcessExit {
        let signal = status & 0x7f
        return signal == 0 ? .exited((status >> 8) & 0xff) : .signaled(signal)
    }

    /// kill(2); a process that is already gone is not an error.
    public static func signal(_ pid: pid_t, _ signal: Int32) throws {
        if kill(pid, signal) != 0 && errno != ESRCH { throw SystemError("kill -\(signal)", "\(pid)", errno: errno) }
    }
}

private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) throws -> R) rethrows -> R {
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    pointers.append(nil)
    defer { pointers.forEach { free($0) } }
    return try pointers.withUnsafeBufferPointer { try body($0.baseAddress!) }
}

private func withOptionalCString<R>(_ string: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
    guard let string else { return body(nil) }
    return string.withCString { body($0) }
}
