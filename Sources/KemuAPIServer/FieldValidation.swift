import KemuAPI

/// `?fieldValidation=Strict|Warn|Ignore`, as upstream: what to do with fields the kind does not
/// have — refuse the request (400, kubectl's default since 1.27), answer with a Warning header
/// (the default without the parameter), or say nothing. Each kind's fields are `FieldSchema.kinds`:
/// every field of the structures users write (pod specs, containers, probes, Services, workload
/// specs) down to where it lists `.any`.
enum FieldValidation: String {
    case strict = "Strict", warn = "Warn", ignore = "Ignore"

    init(_ query: Query) throws {
        guard let text = query["fieldValidation"] else { self = .warn; return }
        guard let value = FieldValidation(rawValue: text) else {
            throw APIError.badRequest("fieldValidation: Unsupported value: \"\(text.prefix(64))\": supported values: \"Ignore\", \"Strict\", \"Warn\"")
        }
        self = value
    }

    /// The fields of `o` its kind does not have, as paths (`spec2`, `metadata.lables`,
    /// `spec.template.spec.containers[0].imagee`), in the order they appear.
    static func unknownFields(_ o: JSON, _ r: APIResource) -> [String] {
        guard let schema = FieldSchema.kinds[r.kind] else { return [] }
        var found: [String] = []
        schema.unknownFields(in: o, at: "", into: &found)
        return found
    }

    /// Throws for Strict; returns the Warning header values for Warn.
    func check(_ o: JSON, _ r: APIResource) throws -> [String] {
        guard self != .ignore else { return [] }
        let unknown = Self.unknownFields(o, r)
        guard !unknown.isEmpty else { return [] }
        if self == .strict {
            throw APIError.badRequest("strict decoding error: " + unknown.map { "unknown field \"\($0)\"" }.joined(separator: ", "))
        }
        return unknown.map { "299 - \"unknown field \\\"\($0)\\\"\"" }
    }
}
