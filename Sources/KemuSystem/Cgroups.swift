import Glibc

/// Control groups for containers' resource limits, where the machine lets kemu make them: under
/// the caller's own group of each controller (so whatever limits the caller already has still
/// hold), a group per owner (`kemu-<cluster>-<node>`), and one per container in it with its
/// memory limit and CPU quota. cgroup v1 (separate memory and cpu hierarchies) and v2 (one
/// unified hierarchy with the memory and cpu controllers enabled for children) both work; with
/// neither, `CgroupTree.make` gives nil and containers run without limits.
public struct CgroupTree: Sendable {
    /// The owner's directory per controller: [memory, cpu] with v1, one with v2.
    public let directories: [String]
    public let unified: Bool

    /// The owner's group under the caller's own, made if missing; nil where the machine has no
    /// memory and cpu controller kemu can use.
    public static func make(name: String) -> CgroupTree? {
        let mounts = (try? FileSystem.readFile("/proc/self/mountinfo")) ?? ""
        let own = (try? FileSystem.readFile("/proc/self/cgroup")) ?? ""
        func ownPath(_ controller: String?) -> String? {
            for line in own.split(separator: "\n") {
                let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
                guard parts.count == 3 else { continue }
                let controllers = parts[1].split(separator: ",")
                if let controller, controllers.contains(Substring(controller)) { return String(parts[2]) }
                if controller == nil, parts[0] == "0", parts[1].isEmpty { return String(parts[2]) }
            }
            return nil
        }
        func mount(type: String, controller: String?) -> (point: String, root: String)? {
            hierarchy(type: type, controller: controller, mounts: mounts)
        }
        func directory(_ m: (point: String, root: String), _ path: String) -> String {
            Self.directory(m, path) + "/" + name
        }
        if let memory = mount(type: "cgroup", controller: "memory"), let cpu = mount(type: "cgroup", controller: "cpu"),
           let memoryPath = ownPath("memory"), let cpuPath = ownPath("cpu") {
            let dirs = [directory(memory, memoryPath), directory(cpu, cpuPath)]
            guard (try? dirs.forEach { try FileSystem.makeDirectory($0) }) != nil else { return nil }
            return CgroupTree(directories: dirs, unified: false)
        }
        if let unified = mount(type: "cgroup2", controller: nil), let path = ownPath(nil) {
            let dir = directory(unified, path)
            let parent = String(dir.dropLast(name.count + 1))
            let enabled = ((try? FileSystem.readFile("\(parent)/cgroup.subtree_control")) ?? "").split(whereSeparator: \.isWhitespace)
            guard enabled.contains("memory"), enabled.contains("cpu"), (try? FileSystem.makeDirectory(dir)) != nil else { return nil }
            // The owner's group holds no process, so it may pass both controllers on.
            guard (try? write("\(dir)/cgroup.subtree_control", "+memory +cpu")) != nil else { return nil }
            return CgroupTree(directories: [dir], unified: true)
        }
        return nil
    }

    /// Where a hierarchy is mounted and which of its paths that mount's root is.
    static func hierarchy(type: String, controller: String?, mounts: String) -> (point: String, root: String)? {
        for line in mounts.split(separator: "\n") {
            let halves = line.components(separatedBy: " - ")
            guard halves.count == 2 else { continue }
            let left = halves[0].split(separator: " "), right = halves[1].split(separator: " ")
            guard left.count > 4, right.count > 2, right[0] == type else { continue }
            if let controller, !right[2].split(separator: ",").contains(Substring(controller)) { continue }
            return (Spawn.unescapeMountField(left[4]), Spawn.unescapeMountField(left[3]))
        }
        return nil
    }

    /// A group's path (as /proc/PID/cgroup names it) as a directory under the hierarchy's mount.
    static func directory(_ m: (point: String, root: String), _ path: String) -> String {
        let relative = path.hasPrefix(m.root) ? String(path.dropFirst(m.root.count)) : path
        return m.point + (relative.hasPrefix("/") || relative.isEmpty ? relative : "/" + relative)
    }

    /// A container's group, made afresh (one left by an earlier run is emptied first), with its
    /// limits: memory in bytes (nil: none), CPU in thousandths of a core (nil: none).
    public func container(_ name: String, memoryLimit: Int64?, cpuLimitMilli: Int64?) throws -> ContainerCgroup {
        let group = existing(name)
        group.remove()
        for dir in group.directories { try FileSystem.makeDirectory(dir) }
        // CFS bandwidth as kubelet sets it: a 100 ms period, a quota of at least 1 ms.
        // (A limit past what the machine could ever give is no limit, not an overflow.)
        let quota = cpuLimitMilli.map { max($0 > Int64.max / 100 ? -1 : $0 * 100, 1000) }
        if unified {
            let dir = group.directories[0]
            if let memoryLimit { try Self.write("\(dir)/memory.max", String(memoryLimit)); try? Self.write("\(dir)/memory.swap.max", "0") }
            if let quota, cpuLimitMilli ?? 0 <= Int64.max / 100 { try Self.write("\(dir)/cpu.max", "\(quota) 100000") }
        } else {
            if let memoryLimit {
                try Self.write("\(group.directories[0])/memory.limit_in_bytes", String(memoryLimit))
                try? Self.write("\(group.directories[0])/memory.memsw.limit_in_bytes", String(memoryLimit))  // no swap to hide in
            }
            if let quota, cpuLimitMilli ?? 0 <= Int64.max / 100 {
                try Self.write("\(group.directories[1])/cpu.cfs_period_us", "100000")
                try Self.write("\(group.directories[1])/cpu.cfs_quota_us", String(quota))
            }
        }
        return group
    }

    /// A container's group as named, whether or not it exists.
    public func existing(_ name: String) -> ContainerCgroup {
        ContainerCgroup(directories: directories.map { "\($0)/\(name)" }, unified: unified)
    }

    /// Removes the groups recorded in `directory` (a file per owner, a group directory per
    /// line), as `kemu down` does after a crash left them.
    public static func removeRecorded(in directory: String) {
        for file in FileSystem.list(directory) { removeRecorded(file: "\(directory)/\(file)") }
    }

    /// The groups one owner recorded, and the record.
    public static func removeRecorded(file: String) {
        let dirs = ((try? FileSystem.readFile(file)) ?? "").split(separator: "\n").map(String.init)
        CgroupTree(directories: dirs.filter { $0.hasPrefix("/sys/fs/cgroup/") }, unified: false).remove()
        try? FileSystem.removeFile(file)
    }

    /// Every container's group, then the owner's own (processes still in them are killed).
    public func remove() {
        for dir in directories {
            for child in FileSystem.list(dir) where FileSystem.exists("\(dir)/\(child)/cgroup.procs") {
                ContainerCgroup(directories: ["\(dir)/\(child)"], unified: unified).remove()
            }
            _ = rmdir(dir)
        }
    }

    static func write(_ path: String, _ value: String) throws {
        let fd = try FileDescriptor(opening: path, flags: O_WRONLY)
        try fd.write(value)
    }
}

public struct ContainerCgroup: Sendable {
    public let directories: [String]
    public let unified: Bool

    /// The kemu container group a running process is in (a command run in its container joins
    /// it, as upstream's exec does), nil for one in none.
    public static func of(process pid: pid_t) -> ContainerCgroup? {
        guard let own = try? FileSystem.readFile("/proc/\(pid)/cgroup"), own.contains("/kemu-"),
              let mounts = try? FileSystem.readFile("/proc/self/mountinfo") else { return nil }
        var v1: [String: String] = [:]
        for line in own.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3, parts[2].contains("/kemu-") else { continue }
            let path = String(parts[2])
            if parts[0] == "0", parts[1].isEmpty, let m = CgroupTree.hierarchy(type: "cgroup2", controller: nil, mounts: mounts) {
                return ContainerCgroup(directories: [CgroupTree.directory(m, path)], unified: true)
            }
            for controller in ["memory", "cpu"] where parts[1].split(separator: ",").contains(Substring(controller)) {
                if let m = CgroupTree.hierarchy(type: "cgroup", controller: controller, mounts: mounts) { v1[controller] = CgroupTree.directory(m, path) }
            }
        }
        guard let memory = v1["memory"], let cpu = v1["cpu"] else { return nil }
        return ContainerCgroup(directories: [memory, cpu], unified: false)
    }

    /// The files a process joins the group by (Spawn's `cgroups`: the child writes itself in).
    public var procsFiles: [String] { directories.map { "\($0)/cgroup.procs" } }

    /// How many of its processes the kernel's OOM killer has killed.
    public var oomKills: Int {
        guard let dir = directories.first else { return 0 }
        let text = (try? FileSystem.readFile(unified ? "\(dir)/memory.events" : "\(dir)/memory.oom_control")) ?? ""
        for line in text.split(separator: "\n") where line.hasPrefix("oom_kill ") {
            return Int(line.dropFirst("oom_kill ".count)) ?? 0
        }
        return 0
    }

    /// Kills what is left in it (a container's background processes outlive its main one), then
    /// removes it.
    public func remove() {
        for dir in directories where FileSystem.exists(dir) {
            for _ in 0..<50 {
                let pids = ((try? FileSystem.readFile("\(dir)/cgroup.procs")) ?? "").split(separator: "\n").compactMap { pid_t($0) }
                for pid in pids { kill(pid, SIGKILL) }
                if rmdir(dir) == 0 || errno == ENOENT { break }
                usleep(10_000)
            }
        }
    }
}
