import Foundation
import KemuAPI

/// ConfigMaps and Secrets as upstream validates them: keys, sizes, Secret types, `immutable`.
extension Admission {
    /// Upstream's limit on a ConfigMap's or Secret's data (etcd's value size, in effect).
    static let maxDataBytes = 1 << 20

    /// `stringData` is write-only: merged over `data` (base64) and dropped; a Secret without a
    /// type is Opaque.
    static func defaultSecret(_ o: inout JSON) {
        if (o["type"]?.string ?? "").isEmpty { o["type"] = "Opaque" }
        if let strings = o["stringData"]?.object {
            var data = o["data"]?.object ?? JSONObject()
            for (key, value) in strings { data[key] = .string(Data((value.string ?? "").utf8).base64EncodedString()) }
            o["data"] = .object(data)
        }
        o["stringData"] = nil
    }

    static func validateConfigMap(_ o: JSON) -> [FieldError] {
        var errors: [FieldError] = []
        var size = 0
        let data = o["data"]?.object ?? JSONObject()
        let binary = o["binaryData"]?.object ?? JSONObject()
        for (key, value) in data {
            errors += validateDataKey(key, at: "data")
            guard let text = value.string else { errors.append(.invalid("data[\(key)]", value.text(), "must be a string")); continue }
            size += key.utf8.count + text.utf8.count
        }
        for (key, value) in binary {
            errors += validateDataKey(key, at: "binaryData")
            if data[key] != nil { errors.append(.invalid("data[\(key)]", "\"\(key)\"", "duplicate of key present in binaryData")) }
            guard let bytes = value.string.flatMap({ Data(base64Encoded: $0) }) else {
                errors.append(.invalid("binaryData[\(key)]", "\"<binary>\"", "must be base64 encoded"))
                continue
            }
            size += key.utf8.count + bytes.count
        }
        if size > maxDataBytes { errors.append(FieldError(field: "", reason: "FieldValueTooLong", message: "Too long: must have at most \(maxDataBytes) bytes")) }
        return errors
    }

    static func validateSecret(_ o: JSON) -> [FieldError] {
        var errors: [FieldError] = []
        var size = 0
        var decoded: [String: Data] = [:]
        for (key, value) in o["data"]?.object ?? JSONObject() {
            errors += validateDataKey(key, at: "data")
            guard let bytes = value.string.flatMap({ Data(base64Encoded: $0) }) else {
                errors.append(.invalid("data[\(key)]", "\"<secret contents redacted>\"", "must be base64 encoded"))
                continue
            }
            decoded[key] = bytes
            size += bytes.count
        }
        if size > maxDataBytes { errors.append(FieldError(field: "data", reason: "FieldValueTooLong", message: "Too long: must have at most \(maxDataBytes) bytes")) }
        // What each built-in type must hold (upstream's ValidateSecret).
        switch o["type"]?.string ?? "Opaque" {
        case "kubernetes.io/tls":
            for key in ["tls.crt", "tls.key"] where decoded[key] == nil { errors.append(.required("data[\(key)]")) }
        case "kubernetes.io/dockerconfigjson":
            if let config = decoded[".dockerconfigjson"] {
                if (try? JSON.parse(Array(config)))?.object == nil {
                    errors.append(.invalid("data[.dockerconfigjson]", "\"<secret contents redacted>\"", "must be a JSON object"))
                }
            } else {
                errors.append(.required("data[.dockerconfigjson]"))
            }
        case "kubernetes.io/dockercfg":
            if decoded[".dockercfg"] == nil { errors.append(.required("data[.dockercfg]")) }
        case "kubernetes.io/basic-auth":
            if decoded["username"] == nil && decoded["password"] == nil {
                errors.append(FieldError(field: "data[username]", reason: "FieldValueRequired",
                                         message: "Required value: either username or password or both must be provided"))
            }
        case "kubernetes.io/ssh-auth":
            if decoded["ssh-privatekey"] == nil { errors.append(.required("data[ssh-privatekey]")) }
        case "kubernetes.io/service-account-token":
            if (o.annotations["kubernetes.io/service-account.name"] ?? "").isEmpty {
                errors.append(.required("metadata.annotations[kubernetes.io/service-account.name]"))
            }
        default: break
        }
        return errors
    }

    /// A key of `data`/`binaryData`: what a file name and an environment variable can both be.
    static func validateDataKey(_ key: String, at field: String) -> [FieldError] {
        let allowed = key.utf8.allSatisfy { $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_")
            || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
        let shown = "\"\(key.prefix(64))\""
        if key.isEmpty || !allowed || key.utf8.count > 253 {
            return [.invalid("\(field)[\(key.prefix(64))]", shown,
                             "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')")]
        }
        if key == "." || key == ".." { return [.invalid("\(field)[\(key)]", shown, "must not be '.' or '..'")] }
        // A volume's files sit beside its `..data` link and `..<version>` directories.
        if key.hasPrefix("..") { return [.invalid("\(field)[\(key)]", shown, "must not start with '..'")] }
        return []
    }

    /// What an update may not change: an immutable ConfigMap's or Secret's data (nor unset
    /// `immutable`), a Secret's type.
    static func validateConfigurationUpdate(_ new: JSON, _ old: JSON, _ r: APIResource) -> [FieldError] {
        guard r.kind == "ConfigMap" || r.kind == "Secret" else { return [] }
        var errors: [FieldError] = []
        if r.kind == "Secret", new["type"] != old["type"] {
            errors.append(.invalid("type", new["type"]?.text() ?? "null", "field is immutable"))
        }
        if old["immutable"]?.bool == true {
            if new["immutable"]?.bool != true {
                errors.append(FieldError(field: "immutable", reason: "FieldValueForbidden", message: "Forbidden: field is immutable when `immutable` is set"))
            }
            for key in r.kind == "Secret" ? ["data"] : ["data", "binaryData"] where new[key] != old[key] {
                errors.append(FieldError(field: key, reason: "FieldValueForbidden", message: "Forbidden: field is immutable when `immutable` is set"))
            }
        }
        return errors
    }
}
