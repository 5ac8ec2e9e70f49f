import Foundation
import Glibc
import KemuAPI
import KemuSystem

/// Who a container's process runs as, from its `securityContext` over the pod's over its image's
/// user (kubelet and the container runtime's rules): runAsUser / runAsGroup, supplementalGroups
/// and fsGroup as extra groups, runAsNonRoot checked, capabilities add/drop over the runtime's
/// default set (all of them when `privileged`), allowPrivilegeEscalation: false as no_new_privs.
/// With none of these, an unprivileged user (`ImageCatalog.defaultUser`), never root.
extension PodWorker {
    func identity(of container: JSON) throws -> ProcessIdentity {
        let pod = self.pod[path: "spec.securityContext"]
        let own = container["securityContext"]
        let image = agent.config.images.lookup(container["image"]?.string ?? "")?.user
        func id(_ key: String) throws -> UInt32? {
            guard let value = own?[key] ?? pod?[key], value != .null else { return nil }
            guard let n = value.int, (0...Int64(Int32.max)).contains(n) else {
                throw ContainerError(reason: "CreateContainerConfigError", message: "securityContext.\(key): \(value.text()) is not a user or group id (0-2147483647)")
            }
            return UInt32(n)
        }
        let user = try id("runAsUser") ?? image?.uid ?? ImageCatalog.defaultUser.uid
        let group = try id("runAsGroup") ?? image?.gid ?? (image == nil ? ImageCatalog.defaultUser.gid : Self.primaryGroup(of: user))
        if user == 0, (own?["runAsNonRoot"] ?? pod?["runAsNonRoot"])?.bool == true {
            throw ContainerError(reason: "CreateContainerConfigError", message: "container has runAsNonRoot and image will run as root (pod: \"\(name)_\(namespace)(\(uid))\", container: \(container["name"]?.string ?? ""))")
        }
        var groups: [UInt32] = []
        for value in (pod?["supplementalGroups"]?.array ?? []) + [pod?["fsGroup"]].compactMap({ $0 }) where value != .null {
            guard let n = value.int, (0...Int64(Int32.max)).contains(n) else {
                throw ContainerError(reason: "CreateContainerConfigError", message: "securityContext: group \(value.text()) is not a group id (0-2147483647)")
            }
            if !groups.contains(UInt32(n)) { groups.append(UInt32(n)) }
        }
        let names = { (key: String) in (own?[path: "capabilities.\(key)"]?.array ?? []).compactMap(\.string) }
        let capabilities = own?["privileged"]?.bool == true
            ? CapabilitySet.all : CapabilitySet.containerDefault.adding(names("add"), dropping: names("drop"))
        return ProcessIdentity(user: user, group: group, groups: groups, capabilities: capabilities,
                               noNewPrivileges: own?["allowPrivilegeEscalation"]?.bool == false)
    }

    /// The pod's QoS class, as upstream computes it: no requests or limits in any container is
    /// BestEffort; cpu and memory limits in every container, equal to their requests where given,
    /// is Guaranteed; anything else Burstable.
    static func qosClass(_ pod: JSON) -> String {
        let containers = pod[path: "spec.containers"]?.array ?? []
        let resources = containers.map { ($0[path: "resources.requests"]?.object, $0[path: "resources.limits"]?.object) }
        if resources.allSatisfy({ ($0.0?.isEmpty ?? true) && ($0.1?.isEmpty ?? true) }) { return "BestEffort" }
        let guaranteed = resources.allSatisfy { requests, limits in
            ["cpu", "memory"].allSatisfy { key in
                guard let limit = limits?[key] else { return false }
                return requests?[key].map { Quantity.milli($0) == Quantity.milli(limit) } ?? true
            }
        }
        return guaranteed ? "Guaranteed" : "Burstable"
    }

    /// How much a container's processes yield the CPU, by QoS class, as kubelet's cgroup weights
    /// make them yield: BestEffort +10, Burstable +5, Guaranteed 0. kemu's daemons run at 0 (the
    /// API server at −10), so a burst of starting pods cannot starve heartbeats and the API. Each
    /// runs in a session whose autogroup has the same niceness, so it counts across sessions too.
    static func niceness(_ qos: String) -> Int32 {
        switch qos {
        case "BestEffort": 10
        case "Burstable": 5
        default: 0
        }
    }

    /// The user's group in /etc/passwd, or a group of the same number (a uid with no entry).
    static func primaryGroup(of user: UInt32) -> UInt32 {
        guard let entry = getpwuid(user) else { return user }
        return entry.pointee.pw_gid
    }

    /// The pod's hostname as its UTS namespace has it: the name cut to 63 bytes, as kubelet does.
    var hostname: String {
        // spec.hostname when the pod has one (an Indexed Job's `<job>-<index>`), else its name.
        var name = String((pod[path: "spec.hostname"]?.string).flatMap { $0.isEmpty ? nil : $0 } ?? self.name).prefix(63).description
        while name.hasSuffix("-") || name.hasSuffix(".") { name.removeLast() }
        return name.isEmpty ? "pod" : name
    }

    /// The home directory a container's user gets: root's, or `/` for anyone else (as container
    /// runtimes do for users the image does not list).
    static func home(of identity: ProcessIdentity) -> String { identity.user == 0 ? "/root" : "/" }

    /// Gives the container's user its PersistentVolumeClaim directories (a fresh one is root's),
    /// or, with `fsGroup`, the group (setgid, group-writable), as kubelet does with volume ownership.
    func own(_ mounts: [Mount], for identity: ProcessIdentity) {
        let fsGroup = pod[path: "spec.securityContext.fsGroup"]?.int.flatMap { UInt32(exactly: $0) }
        for mount in mounts where mount.claim {
            var info = stat()
            guard stat(mount.source, &info) == 0 else { continue }
            if let fsGroup {
                if info.st_gid != fsGroup { _ = chown(mount.source, uid_t.max, fsGroup) }
                _ = chmod(mount.source, (info.st_mode & 0o7777) | 0o2070)
            } else if info.st_uid == 0 && identity.user != 0 {
                _ = chown(mount.source, identity.user, identity.group)
            }
        }
    }
}
