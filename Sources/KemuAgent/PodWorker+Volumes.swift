import Foundation
import KemuAPI
import KemuSystem

/// Volumes without a container engine: a PersistentVolumeClaim is a directory of the node
/// agent's volume directory (`<namespace>/<claim>/`, made on first use, never removed with the
/// pod), a hostPath is itself. Each one a container mounts is bound over its `mountPath` in the
/// container's private mount namespace when that path exists on the machine, and is always
/// named by `KEMU_VOLUME_<NAME>` (the volume's name upper-cased, '-' as '_'); the first one is
/// the working directory unless the container sets `workingDir`.
extension PodWorker {
    struct Mount {
        var name: String
        var source: String
        var target: String
        /// A PersistentVolumeClaim's directory, which the container's user is given.
        var claim = false
    }

    func mounts(of container: JSON) throws -> [Mount] {
        let volumes = pod[path: "spec.volumes"]?.array ?? []
        return try (container["volumeMounts"]?.array ?? []).compactMap { mount in
            guard let name = mount["name"]?.string, let target = mount["mountPath"]?.string else { return nil }
            guard let volume = volumes.first(where: { $0["name"]?.string == name }) else {
                throw ContainerError(reason: "CreateContainerConfigError", message: "volumeMounts: volume \"\(name)\" is not in spec.volumes")
            }
            let source: String
            var isClaim = false
            if let claim = volume[path: "persistentVolumeClaim.claimName"]?.string {
                source = "\(agent.config.volumeDirectory)/\(pod.namespace)/\(claim)"
                isClaim = true
                do {
                    try FileSystem.makeDirectories(source, mode: 0o755)
                } catch {
                    throw ContainerError(reason: "CreateContainerConfigError", message: "volume \"\(name)\": cannot create \(source): \(error)")
                }
            } else if let path = volume[path: "hostPath.path"]?.string {
                source = path
            } else {
                return nil  // emptyDir, configMap…: not emulated
            }
            return Mount(name: name, source: source, target: target, claim: isClaim)
        }
    }

    static func environmentName(_ volume: String) -> String {
        "KEMU_VOLUME_" + volume.uppercased().map { $0.isLetter || $0.isNumber ? String($0) : "_" }.joined()
    }

    /// The spawn options a container's mounts need.
    func apply(_ mounts: [Mount], to options: inout Spawn.Options, workingDir: String?) {
        for mount in mounts { options.environment[Self.environmentName(mount.name)] = mount.source }
        // Every one, also those whose mountPath the machine lacks (the bind is skipped there): the
        // source stays reachable at its own path when kemu's state is covered (Spawn's hiddenPaths).
        options.bindMounts = mounts.map { ($0.source, $0.target) }
        if workingDir == nil, let first = mounts.first {
            options.workingDirectory = FileSystem.exists(first.target) ? first.target : first.source
        }
    }
}
