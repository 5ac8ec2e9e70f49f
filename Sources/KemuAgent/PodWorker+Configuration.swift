import Foundation
import KemuAPI
import KemuClient

/// Environment variables from ConfigMaps and Secrets (`env[].valueFrom.configMapKeyRef |
/// secretKeyRef`, `envFrom`), read from the API at every container start, as kubelet reads them.
/// A required source or key that is missing holds the container in CreateContainerConfigError
/// with kubelet's message, and the start is tried again until it appears: never an empty value.
extension PodWorker {
    /// The variables the sources give, in the order they apply (envFrom first, then env; later
    /// wins), or why the container cannot start yet.
    func configuredVariables(_ spec: JSON) async -> Result<[(name: String, value: String)], ContainerError> {
        let kinds: [(field: String, resource: APIResource, kind: String, singular: String)] = [
            ("configMap", APIResources.configMaps, "ConfigMap", "configmap"), ("secret", APIResources.secrets, "Secret", "secret"),
        ]
        // Every source named, read once: "configmaps/NAME" → its values (nil: not found).
        var wanted: [(APIResource, String)] = []
        for k in kinds {
            for from in spec["envFrom"]?.array ?? [] { if let n = from["\(k.field)Ref"]?["name"]?.string { wanted.append((k.resource, n)) } }
            for v in spec["env"]?.array ?? [] { if let n = v[path: "valueFrom.\(k.field)KeyRef.name"]?.string { wanted.append((k.resource, n)) } }
        }
        var sources: [String: [String: String]?] = [:]
        for (resource, sourceName) in wanted where sources["\(resource.resource)/\(sourceName)"] == nil {
            do {
                let object = try await agent.client.get(resource, namespace: namespace, name: sourceName)
                sources["\(resource.resource)/\(sourceName)"] = .some(Self.values(of: object, secret: resource.resource == "secrets"))
            } catch let error as ClientError where error.code == 404 {
                sources["\(resource.resource)/\(sourceName)"] = .some(nil)
            } catch {
                return .failure(Self.configError("failed to read \(resource.resource) \(namespace)/\(sourceName): \(error)"))
            }
        }
        var variables: [(name: String, value: String)] = []
        for from in spec["envFrom"]?.array ?? [] {
            for k in kinds {
                guard let ref = from["\(k.field)Ref"], let sourceName = ref["name"]?.string else { continue }
                guard let data = sources["\(k.resource.resource)/\(sourceName)"] ?? nil else {
                    if ref["optional"]?.bool == true { continue }
                    return .failure(Self.configError("\(k.singular) \"\(sourceName)\" not found"))
                }
                let prefix = from["prefix"]?.string ?? ""
                for key in data.keys.sorted() where !key.contains("=") { variables.append((prefix + key, data[key] ?? "")) }
            }
        }
        for variable in spec["env"]?.array ?? [] {
            guard let name = variable["name"]?.string else { continue }
            for k in kinds {
                guard let ref = variable[path: "valueFrom.\(k.field)KeyRef"], let sourceName = ref["name"]?.string else { continue }
                let key = ref["key"]?.string ?? ""
                let optional = ref["optional"]?.bool == true
                guard let data = sources["\(k.resource.resource)/\(sourceName)"] ?? nil else {
                    if optional { continue }
                    return .failure(Self.configError("\(k.singular) \"\(sourceName)\" not found"))
                }
                guard let value = data[key] else {
                    if optional { continue }
                    return .failure(Self.configError("couldn't find key \(key) in \(k.kind) \(namespace)/\(sourceName)"))
                }
                variables.append((name, value))
            }
        }
        return .success(variables)
    }

    static func configError(_ message: String) -> ContainerError {
        ContainerError(reason: "CreateContainerConfigError", message: message)
    }

    /// A ConfigMap's data and binaryData, or a Secret's decoded data, as text.
    static func values(of object: JSON, secret: Bool) -> [String: String] {
        var values: [String: String] = [:]
        if secret {
            for (key, value) in object["data"]?.object ?? JSONObject() {
                values[key] = value.string.flatMap { Data(base64Encoded: $0) }.map { String(decoding: $0, as: UTF8.self) } ?? ""
            }
        } else {
            for (key, value) in object["binaryData"]?.object ?? JSONObject() {
                values[key] = value.string.flatMap { Data(base64Encoded: $0) }.map { String(decoding: $0, as: UTF8.self) } ?? ""
            }
            for (key, value) in object["data"]?.object ?? JSONObject() { values[key] = value.string ?? "" }
        }
        return values
    }
}
