import Foundation
import KemuAPI
import KemuSystem

/// Volumes without a container engine. Each container runs in a root of its own (the machine's,
/// seen through an overlay whose writes stay with the container: Spawn's `privateRoot`), so a
/// volume is bound at its `mountPath` whether or not that path exists on the machine, and two
/// pods mounting the same path each see their own. A PersistentVolumeClaim is a directory of the
/// node agent's volume directory (`<namespace>/<claim>/`, made on first use, never removed with
/// the pod), a hostPath is itself, an emptyDir and the files of a configMap, secret, downwardAPI
/// or projected volume are the pod's (`PodWorker+VolumeFiles`, gone with it); those four are
/// mounted read-only, as kubelet mounts them. Each is also named by `KEMU_VOLUME_<NAME>` (the
/// volume's name upper-cased, '-' as '_'); the first one is the working directory unless the
/// container sets `workingDir`.
extension PodWorker {
    struct Mount {
        var name: String
        var source: String
        var target: String
        var readOnly: Bool
        /// A PersistentVolumeClaim's directory, which the container's user is given.
        var claim = false
    }

    /// Volume kinds whose contents the agent writes from the API.
    static let writtenVolumeKinds = ["configMap", "secret", "downwardAPI", "projected"]
    static let volumeKinds = ["persistentVolumeClaim", "hostPath", "emptyDir"] + writtenVolumeKinds

    /// DIR/<uid>/volumes/<name>: an emptyDir, or a written volume's files.
    func volumeDirectory(_ name: String) -> String { "\(agent.config.podDirectory)/\(uid)/volumes/\(name)" }

    /// DIR/<uid>/roots/<container>: where the container's private root keeps its writes (an
    /// empty directory on the machine; the tmpfs on it is in the container's mount namespace).
    func rootScratch(_ container: String) -> String { "\(agent.config.podDirectory)/\(uid)/roots/\(container)" }

    func mounts(of container: JSON) throws -> [Mount] {
        let volumes = pod[path: "spec.volumes"]?.array ?? []
        return try (container["volumeMounts"]?.array ?? []).enumerated().map { index, mount in
            let at = "volumeMounts[\(index)]"
            guard let name = mount["name"]?.string, let target = mount["mountPath"]?.string else {
                throw Self.configError("\(at): name and mountPath are required")
            }
            guard target.hasPrefix("/"), !Self.hasBacksteps(target) else {
                throw Self.configError("\(at).mountPath: \"\(target)\" must be an absolute path without '..'")
            }
            guard let volume = volumes.first(where: { $0["name"]?.string == name }) else {
                throw Self.configError("\(at): volume \"\(name)\" is not in spec.volumes")
            }
            // Admission allows DNS names only; none that could leave its directory reaches the disk.
            guard Self.isPlainName(name) else { throw Self.configError("\(at): \"\(name)\" is not a volume name") }
            guard let kind = Self.volumeKinds.first(where: { volume[$0] != nil }) else {
                let other = volume.object?.keys.first { $0 != "name" } ?? "(none)"
                throw Self.configError("volume \"\(name)\": kemu does not emulate \(other) volumes (it has \(Self.volumeKinds.joined(separator: ", ")))")
            }
            var source: String
            switch kind {
            case "persistentVolumeClaim":
                let claim = volume[path: "persistentVolumeClaim.claimName"]?.string ?? ""
                guard Self.isPlainName(claim), Self.isPlainName(pod.namespace) else {
                    throw Self.configError("volume \"\(name)\": \"\(claim)\" is not a claim name")
                }
                source = "\(agent.config.volumeDirectory)/\(pod.namespace)/\(claim)"
                try Self.makeDirectory(source, volume: name, mode: 0o755)
            case "hostPath":
                source = volume[path: "hostPath.path"]?.string ?? ""
                if volume[path: "hostPath.type"]?.string == "DirectoryOrCreate" { try Self.makeDirectory(source, volume: name, mode: 0o755) }
                guard source.hasPrefix("/"), FileSystem.exists(source) else {
                    throw Self.configError("volume \"\(name)\": hostPath \"\(source)\" does not exist on the machine")
                }
            default:
                source = volumeDirectory(name)  // made or written before the containers start
            }
            if let sub = mount["subPath"]?.string, !sub.isEmpty {
                guard !sub.hasPrefix("/"), !Self.hasBacksteps(sub) else {
                    throw Self.configError("\(at).subPath: \"\(sub)\" must be a relative path without '..'")
                }
                source += "/" + sub
                if !Self.writtenVolumeKinds.contains(kind) { try Self.makeDirectory(source, volume: name, mode: 0o777) }
                guard FileSystem.exists(source) else { throw Self.configError("\(at).subPath: \"\(sub)\" is not in volume \"\(name)\"") }
            }
            let readOnly = mount["readOnly"]?.bool == true || Self.writtenVolumeKinds.contains(kind)
            return Mount(name: name, source: source, target: target, readOnly: readOnly, claim: kind == "persistentVolumeClaim")
        }
    }

    /// One path component of kemu's own directories: not empty, no '/', not starting with '.'.
    static func isPlainName(_ name: String) -> Bool {
        !name.isEmpty && !name.contains("/") && !name.hasPrefix(".") && !name.contains("\0")
    }

    static func hasBacksteps(_ path: String) -> Bool {
        path.split(separator: "/").contains("..")
    }

    static func makeDirectory(_ path: String, volume: String, mode: mode_t) throws {
        do {
            try FileSystem.makeDirectories(path, mode: mode)
        } catch {
            throw configError("volume \"\(volume)\": cannot create \(path): \(error)")
        }
    }

    static func environmentName(_ volume: String) -> String {
        "KEMU_VOLUME_" + volume.uppercased().map { $0.isLetter || $0.isNumber ? String($0) : "_" }.joined()
    }

    /// The spawn options a container's mounts need, and its private root.
    func apply(_ mounts: [Mount], to options: inout Spawn.Options, container: String, workingDir: String?) throws {
        for mount in mounts { options.environment[Self.environmentName(mount.name)] = mount.source }
        // The source stays reachable at its own path when kemu's state is covered (Spawn's hiddenPaths).
        options.bindMounts = mounts.map { ($0.source, $0.target, $0.readOnly) }
        if workingDir == nil, let first = mounts.first { options.workingDirectory = first.target }
        let scratch = rootScratch(container)
        try FileSystem.makeDirectories(scratch, mode: 0o700)
        options.privateRoot = scratch
    }
}
