import Foundation
import Glibc
import KemuAPI
import KemuClient
import KemuSystem

/// The pod's own volumes, made before its containers start: an emptyDir is a directory, and a
/// configMap, secret, downwardAPI or projected volume is the files its sources give, written as
/// kubelet's AtomicWriter writes them (a `..<version>` directory, `..data` pointing at it, each
/// top-level name a link through `..data`), so a reader never sees half an update. They are
/// rewritten when their sources change (polled every `volumeRefresh`: a mounted ConfigMap's new
/// data is in the file within seconds). A missing source or key holds the pod in
/// ContainerCreating with kubelet's FailedMount message, unless it is `optional`.
extension PodWorker {
    static let volumeRefresh = Duration.seconds(2)

    /// A volume's files: relative path → contents and mode.
    typealias Payload = [String: (data: [UInt8], mode: mode_t)]

    struct VolumeError: Error, CustomStringConvertible {
        var volume: String
        var message: String
        var description: String { "MountVolume.SetUp failed for volume \"\(volume)\" : \(message)" }
    }

    var writtenVolumes: [JSON] {
        (pod[path: "spec.volumes"]?.array ?? []).filter { v in Self.writtenVolumeKinds.contains { v[$0] != nil } }
    }

    /// Makes every emptyDir and writes every written volume, retrying (with FailedMount events)
    /// until each can be; then keeps them current. False if the pod was stopped meanwhile.
    func setUpVolumes() async -> Bool {
        for volume in pod[path: "spec.volumes"]?.array ?? [] where volume["emptyDir"] != nil {
            guard let name = volume["name"]?.string, Self.isPlainName(name) else { continue }
            let path = volumeDirectory(name)
            do {
                try FileSystem.makeDirectories(path, mode: 0o777)
                _ = chmod(path, 0o777)  // any container user may write, as kubelet makes it
            } catch {
                logger.warning("emptyDir \(path): \(error)")
            }
        }
        guard !writtenVolumes.isEmpty else { return true }
        guard await retryingMount({ try await self.writeVolumes() }, failure: { "\($0)" }) else { return false }
        keepVolumesCurrent()
        return true
    }

    /// Runs a volume's setup until it succeeds, as kubelet retries MountVolume.SetUp: meanwhile
    /// the containers wait as ContainerCreating with the error, each try a FailedMount event,
    /// the pause doubling from 0.5 s to 10 s. False if the pod was stopped first.
    func retryingMount(_ setUp: () async throws -> Void, failure: (any Error) -> String) async -> Bool {
        var pause = Duration.milliseconds(500)
        while !stopped {
            do {
                try await setUp()
                return true
            } catch {
                let message = failure(error)
                logger.warning("\(message)")
                for i in containers.indices { containers[i].state = ["waiting": ["reason": "ContainerCreating", "message": .string(message)]] }
                await agent.event(pod, type: "Warning", reason: "FailedMount", message: message)
                await report()
                try? await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(10))
            }
        }
        return false
    }

    /// Rewrites each written volume whose files would change.
    func writeVolumes() async throws {
        for volume in writtenVolumes {
            let name = volume["name"]?.string ?? ""
            // Admission allows only DNS labels; a name that could leave the pod's directory is never written.
            guard Self.isPlainName(name) else { throw VolumeError(volume: name, message: "not a volume name") }
            let payload = try await self.payload(of: volume, name: name)
            let directory = volumeDirectory(name)
            if VolumeWriter.current(directory) == payload.mapValues({ $0.data }) && volumeModes[name] == payload.mapValues({ $0.mode }) { continue }
            do {
                let group = pod[path: "spec.securityContext.fsGroup"]?.int.flatMap { gid_t(exactly: $0) }
                try VolumeWriter.write(payload, to: directory, owner: group == nil ? volumeOwner(name) : nil, group: group)
                volumeModes[name] = payload.mapValues { $0.mode }
            } catch {
                throw VolumeError(volume: name, message: "\(error)")
            }
        }
    }

    /// Without fsGroup, a volume's files belong to the user of the first container mounting it
    /// when that is not root: kemu runs containers as an unprivileged user where their images
    /// would run as root, and a Secret's 0400 files must stay readable to them as there.
    func volumeOwner(_ volume: String) -> uid_t? {
        let all = (pod[path: "spec.initContainers"]?.array ?? []) + (pod[path: "spec.containers"]?.array ?? [])
        guard let container = all.first(where: { c in (c["volumeMounts"]?.array ?? []).contains { $0["name"]?.string == volume } }),
              let user = try? identity(of: container).user, user != 0 else { return nil }
        return user
    }

    func keepVolumesCurrent() {
        volumeTask?.cancel()
        volumeTask = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: Self.volumeRefresh)
                guard !Task.isCancelled, let self, await self.refreshVolumes() else { return }
            }
        }
    }

    /// One refresh of the written volumes (a failure keeps the files as they were); false once
    /// the pod is stopped.
    func refreshVolumes() async -> Bool {
        guard !stopped else { return false }
        do { try await writeVolumes() } catch { logger.debug("refreshing volumes: \(error)") }
        return true
    }

    func payload(of volume: JSON, name: String) async throws -> Payload {
        let kind = Self.writtenVolumeKinds.first { volume[$0] != nil } ?? ""
        let defaultMode = try Self.mode(volume[kind]?["defaultMode"], volume: name) ?? 0o644
        var payload: Payload = [:]
        func add(_ files: [(path: String, data: [UInt8], mode: mode_t?)]) throws {
            for file in files {
                guard !file.path.isEmpty, !file.path.hasPrefix("/"), !file.path.hasPrefix(".."), !Self.hasBacksteps(file.path) else {
                    throw VolumeError(volume: name, message: "item path \"\(file.path)\" must be relative, without '..'")
                }
                payload[file.path] = (file.data, file.mode ?? defaultMode)
            }
        }
        if let source = volume["configMap"] {
            try add(try await keyedFiles(source, nameField: "name", secret: false, volume: name))
        } else if let source = volume["secret"] {
            try add(try await keyedFiles(source, nameField: "secretName", secret: true, volume: name))
        } else if let source = volume["downwardAPI"] {
            try add(try downwardFiles(source, volume: name))
        } else if let projected = volume["projected"] {
            for source in projected["sources"]?.array ?? [] {
                if let s = source["configMap"] { try add(try await keyedFiles(s, nameField: "name", secret: false, volume: name)) }
                else if let s = source["secret"] { try add(try await keyedFiles(s, nameField: "name", secret: true, volume: name)) }
                else if let s = source["downwardAPI"] { try add(try downwardFiles(s, volume: name)) }
                else if let s = source["serviceAccountToken"] { try add([try await projectedToken(s, volume: name)]) }
                else {
                    let kind = source.object?.keys.first ?? "(none)"
                    throw VolumeError(volume: name, message: "kemu does not emulate projected \(kind) sources")
                }
            }
        }
        return payload
    }

    /// A ConfigMap's or Secret's keys as files (all of them, or `items`).
    func keyedFiles(_ source: JSON, nameField: String, secret: Bool, volume: String) async throws -> [(path: String, data: [UInt8], mode: mode_t?)] {
        let objectName = source[nameField]?.string ?? ""
        let optional = source["optional"]?.bool == true
        let kind = secret ? "secret" : "configmap"
        let values: [String: [UInt8]]
        do {
            let object = try await agent.client.get(secret ? APIResources.secrets : APIResources.configMaps, namespace: namespace, name: objectName)
            values = Self.bytes(of: object, secret: secret)
        } catch let error as ClientError where error.code == 404 {
            if optional { return [] }
            throw VolumeError(volume: volume, message: "\(kind) \"\(objectName)\" not found")
        } catch {
            throw VolumeError(volume: volume, message: "failed to read \(kind) \(namespace)/\(objectName): \(error)")
        }
        guard let items = source["items"]?.array else { return values.keys.sorted().map { ($0, values[$0] ?? [], nil) } }
        return try items.compactMap { item in
            let key = item["key"]?.string ?? ""
            guard let data = values[key] else {
                if optional { return nil }
                throw VolumeError(volume: volume, message: "\(kind) references non-existent \(secret ? "secret" : "config") key: \(key)")
            }
            return (item["path"]?.string ?? key, data, try Self.mode(item["mode"], volume: volume))
        }
    }

    func downwardFiles(_ source: JSON, volume: String) throws -> [(path: String, data: [UInt8], mode: mode_t?)] {
        try (source["items"]?.array ?? []).map { item in
            let text: String
            if let field = item[path: "fieldRef.fieldPath"]?.string {
                switch field {
                case "metadata.labels": text = Self.formatMap(pod.labels)
                case "metadata.annotations": text = Self.formatMap(pod.annotations)
                default: text = agent.fieldValue(field, pod: pod, podIP: sandbox?.ip.description ?? "")
                }
            } else if let reference = item["resourceFieldRef"] {
                text = try agent.resourceValue(reference, pod: pod, container: nil)
            } else {
                throw VolumeError(volume: volume, message: "item \"\(item["path"]?.string ?? "")\" has neither fieldRef nor resourceFieldRef")
            }
            return (item["path"]?.string ?? "", Array(text.utf8), try Self.mode(item["mode"], volume: volume))
        }
    }

    func projectedToken(_ source: JSON, volume: String) async throws -> (path: String, data: [UInt8], mode: mode_t?) {
        let account = pod[path: "spec.serviceAccountName"]?.string.flatMap { $0.isEmpty ? nil : $0 } ?? "default"
        // Upstream's bounds (10 min to 2^32 s), so no value from the spec can overflow below.
        let seconds = min(max(source["expirationSeconds"]?.int ?? 3600, 600), 1 << 32)
        var spec: JSON = ["expirationSeconds": .int(seconds),
                          "boundObjectRef": ["apiVersion": "v1", "kind": "Pod", "name": .string(name), "uid": .string(uid)]]
        if let audience = source["audience"]?.string, !audience.isEmpty { spec["audiences"] = [.string(audience)] }
        // One token per refresh would change the file every time: kept until 80 % of its life.
        let key = "\(volume)/\(source["path"]?.string ?? "")"
        if let kept = projectedTokens[key], ContinuousClock.now < kept.renew { return (source["path"]?.string ?? "", kept.token, nil) }
        let answer = try await agent.client.create(APIResources.serviceAccounts, namespace: namespace, name: account, subresource: "token",
                                                   ["apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec])
        let token = Array((answer[path: "status.token"]?.string ?? "").utf8)
        projectedTokens[key] = (token, ContinuousClock.now + .seconds(seconds * 8 / 10))
        return (source["path"]?.string ?? "", token, nil)
    }

    /// Labels or annotations as the downward API writes them: `key="value"` lines, sorted.
    static func formatMap(_ map: [String: String]) -> String {
        map.keys.sorted().map { key in
            let value = (map[key] ?? "").replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                .replacingOccurrences(of: "\n", with: "\\n")
            return "\(key)=\"\(value)\""
        }.joined(separator: "\n")
    }

    static func mode(_ value: JSON?, volume: String) throws -> mode_t? {
        guard let value, value != .null else { return nil }
        guard let n = value.int, (0...0o777).contains(n) else {
            throw VolumeError(volume: volume, message: "mode \(value.text()) must be a number between 0 and 0777 (octal)")
        }
        return mode_t(n)
    }

    /// A ConfigMap's data and binaryData, or a Secret's decoded data, as bytes.
    static func bytes(of object: JSON, secret: Bool) -> [String: [UInt8]] {
        var values: [String: [UInt8]] = [:]
        for (key, value) in object[secret ? "data" : "binaryData"]?.object ?? JSONObject() {
            values[key] = value.string.flatMap { Data(base64Encoded: $0) }.map { Array($0) } ?? []
        }
        if !secret { for (key, value) in object["data"]?.object ?? JSONObject() { values[key] = Array((value.string ?? "").utf8) } }
        return values
    }
}

/// kubelet's AtomicWriter: a volume's files in `..<version>/`, `..data` → that directory
/// (replaced by a rename, so readers see the old files or the new, never a mix), and each
/// top-level name a link through `..data`. The old version goes once `..data` has moved.
enum VolumeWriter {
    static func write(_ payload: PodWorker.Payload, to directory: String, owner: uid_t?, group: gid_t?) throws {
        try FileSystem.makeDirectories(directory, mode: 0o755)
        _ = chmod(directory, 0o755)
        let previous = (try? FileManager.default.destinationOfSymbolicLink(atPath: "\(directory)/..data"))
        let version = "..\(Timestamp.now().filter { $0.isNumber })_\(UInt32.random(in: 0...UInt32.max))"
        let versionPath = "\(directory)/\(version)"
        try FileSystem.makeDirectory(versionPath, mode: 0o755)
        do {
            for (path, file) in payload {
                let full = "\(versionPath)/\(path)"
                try FileSystem.makeDirectories((full as NSString).deletingLastPathComponent, mode: 0o755)
                let fd = try FileDescriptor(opening: full, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: file.mode)
                try fd.write(file.data)
                _ = fchmod(fd.raw, file.mode)  // the mode asked for, whatever the umask
                if owner != nil || group != nil { _ = fchown(fd.raw, owner ?? uid_t.max, group ?? gid_t.max) }
            }
            let link = "\(directory)/..data_tmp"
            try FileSystem.removeFile(link)
            try FileSystem.symlink(version, at: link)
            try syscall("rename", link) { rename(link, "\(directory)/..data") }
        } catch {
            try? FileSystem.removeTree(versionPath)
            throw error
        }
        let wanted = Set(payload.keys.map { String($0.split(separator: "/").first ?? "") })
        for name in wanted where !FileSystem.exists("\(directory)/\(name)") {
            try? FileSystem.removeFile("\(directory)/\(name)")  // a dangling link from an older version
            try FileSystem.symlink("..data/\(name)", at: "\(directory)/\(name)")
        }
        for name in FileSystem.list(directory) where !name.hasPrefix("..") && !wanted.contains(name) {
            try? FileSystem.removeFile("\(directory)/\(name)")
        }
        if let previous, previous != version { try? FileSystem.removeTree("\(directory)/\(previous)") }
    }

    /// The files the volume shows now (nil: never written).
    static func current(_ directory: String) -> [String: [UInt8]]? {
        guard let version = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(directory)/..data") else { return nil }
        let base = "\(directory)/\(version)"
        guard let walker = FileManager.default.enumerator(atPath: base) else { return nil }
        var files: [String: [UInt8]] = [:]
        while let path = walker.nextObject() as? String {
            var info = stat()
            guard lstat("\(base)/\(path)", &info) == 0, info.st_mode & S_IFMT == S_IFREG else { continue }
            files[path] = (try? FileDescriptor(opening: "\(base)/\(path)").readAll()) ?? []
        }
        return files
    }
}
