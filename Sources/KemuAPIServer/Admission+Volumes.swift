import KemuAPI

/// A pod spec's volumes and volume mounts, with upstream's messages: each volume named once with
/// exactly one source, each mount naming a volume, and no path (subPath, an item's path) that
/// could climb out of its volume. The node agent checks the paths again before writing.
extension Admission {
    static let volumeSources = [
        "hostPath", "emptyDir", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "secret", "nfs", "iscsi", "glusterfs",
        "persistentVolumeClaim", "rbd", "flexVolume", "cinder", "cephfs", "flocker", "downwardAPI", "fc", "azureFile", "configMap",
        "vsphereVolume", "quobyte", "azureDisk", "photonPersistentDisk", "projected", "portworxVolume", "scaleIO", "storageos",
        "csi", "ephemeral", "image",
    ]

    static func validateVolumes(_ spec: JSON?, at path: String, claims: [String] = []) -> [FieldError] {
        var errors: [FieldError] = []
        var names = Set(claims)
        for (i, volume) in (spec?["volumes"]?.array ?? []).enumerated() {
            let at = "\(path).volumes[\(i)]"
            let name = volume["name"]?.string ?? ""
            if name.isEmpty { errors.append(.required("\(at).name")) }
            else if !isDNSLabel(name) { errors.append(.invalid("\(at).name", "\"\(name)\"", "a lowercase RFC 1123 label")) }
            else if !names.insert(name).inserted { errors.append(FieldError(field: "\(at).name", reason: "FieldValueDuplicate", message: "Duplicate value: \"\(name)\"")) }
            let sources = volumeSources.filter { volume[$0] != nil && volume[$0] != .null }
            if sources.isEmpty { errors.append(FieldError(field: at, reason: "FieldValueRequired", message: "Required value: must specify a volume type")) }
            if sources.count > 1 {
                errors.append(FieldError(field: "\(at).\(sources[1])", reason: "FieldValueForbidden", message: "Forbidden: may not specify more than 1 volume type"))
            }
            for source in sources { errors += validateVolumeFiles(volume[source], at: "\(at).\(source)") }
            if let claim = volume["persistentVolumeClaim"] {
                let claimName = claim["claimName"]?.string ?? ""
                if claimName.isEmpty { errors.append(.required("\(at).persistentVolumeClaim.claimName")) }
                else if !isDNSSubdomain(claimName) {
                    errors.append(.invalid("\(at).persistentVolumeClaim.claimName", "\"\(claimName)\"", "a lowercase RFC 1123 subdomain"))
                }
            }
            for (key, field) in [("configMap", "name"), ("secret", "secretName")] {
                if let name = volume[key]?[field]?.string, !name.isEmpty, !isDNSSubdomain(name) {
                    errors.append(.invalid("\(at).\(key).\(field)", "\"\(name)\"", "a lowercase RFC 1123 subdomain"))
                }
            }
        }
        let containers = (spec?["initContainers"]?.array ?? []).enumerated().map { ("initContainers[\($0.offset)]", $0.element) }
            + (spec?["containers"]?.array ?? []).enumerated().map { ("containers[\($0.offset)]", $0.element) }
        for (field, container) in containers {
            for (j, mount) in (container["volumeMounts"]?.array ?? []).enumerated() {
                let at = "\(path).\(field).volumeMounts[\(j)]"
                let name = mount["name"]?.string ?? ""
                if name.isEmpty { errors.append(.required("\(at).name")) }
                else if !names.contains(name) { errors.append(FieldError(field: "\(at).name", reason: "FieldValueNotFound", message: "Not found: \"\(name)\"")) }
                let target = mount["mountPath"]?.string ?? ""
                if target.isEmpty { errors.append(.required("\(at).mountPath")) }
                else if !target.hasPrefix("/") { errors.append(.invalid("\(at).mountPath", "\"\(target)\"", "must be an absolute path (kemu binds it in the container's root)")) }
                else if hasBacksteps(target) { errors.append(.invalid("\(at).mountPath", "\"\(target)\"", "must not contain '..'")) }
                if let sub = mount["subPath"]?.string, !sub.isEmpty { errors += validateRelative(sub, at: "\(at).subPath") }
            }
        }
        return errors
    }

    /// A configMap, secret, downwardAPI or projected source's modes and item paths.
    static func validateVolumeFiles(_ source: JSON?, at path: String) -> [FieldError] {
        var errors = validateMode(source?["defaultMode"], at: "\(path).defaultMode")
        var items = (source?["items"]?.array ?? []).enumerated().map { ("\(path).items[\($0.offset)]", $0.element) }
        for (k, projection) in (source?["sources"]?.array ?? []).enumerated() {
            for kind in ["configMap", "secret", "downwardAPI"] {
                items += (projection[kind]?["items"]?.array ?? []).enumerated().map { ("\(path).sources[\(k)].\(kind).items[\($0.offset)]", $0.element) }
            }
            if let token = projection["serviceAccountToken"] {
                items.append(("\(path).sources[\(k)].serviceAccountToken", token))
            }
        }
        for (at, item) in items {
            let file = item["path"]?.string ?? ""
            if file.isEmpty { errors.append(.required("\(at).path")) } else { errors += validateRelative(file, at: "\(at).path", noLeadingDots: true) }
            errors += validateMode(item["mode"], at: "\(at).mode")
        }
        return errors
    }

    static func validateRelative(_ value: String, at field: String, noLeadingDots: Bool = false) -> [FieldError] {
        if value.hasPrefix("/") { return [.invalid(field, "\"\(value)\"", "must be a relative path")] }
        if hasBacksteps(value) { return [.invalid(field, "\"\(value)\"", "must not contain '..'")] }
        if noLeadingDots && value.hasPrefix("..") { return [.invalid(field, "\"\(value)\"", "must not start with '..'")] }
        return []
    }

    static func validateMode(_ value: JSON?, at field: String) -> [FieldError] {
        guard let value, value != .null else { return [] }
        if let n = value.int, (0...0o777).contains(n) { return [] }
        return [.invalid(field, value.text(), "must be a number between 0 and 0777 (octal), both inclusive")]
    }

    static func hasBacksteps(_ path: String) -> Bool { path.split(separator: "/").contains("..") }
}
