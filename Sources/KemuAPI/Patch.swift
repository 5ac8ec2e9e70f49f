public enum Patch {
    /// RFC 7386 JSON merge patch: objects merge, null deletes, anything else replaces.
    public static func merge(_ target: JSON, _ patch: JSON) -> JSON {
        guard case .object(let p) = patch else { return patch }
        var result = target.object ?? JSONObject()
        for (key, value) in p {
            if value.isNull {
                result[key] = nil
            } else {
                result[key] = merge(result[key] ?? .null, value)
            }
        }
        return .object(result)
    }

    /// RFC 6902 JSON patch: add, remove, replace, move, copy, test.
    public static func jsonPatch(_ target: JSON, _ patch: JSON) throws -> JSON {
        guard let operations = patch.array else { throw InputError.patch("a JSON patch must be an array of operations") }
        var doc = target
        for (i, op) in operations.enumerated() {
            guard let name = op["op"]?.string, let path = op["path"]?.string else {
                throw InputError.patch("operation \(i): needs \"op\" and \"path\"")
            }
            let pointer = try JSONPointer(path)
            switch name {
            case "add": doc = try pointer.add(try value(op, i), to: doc)
            case "remove": doc = try pointer.remove(from: doc)
            case "replace":
                _ = try pointer.get(doc)
                doc = try pointer.set(try value(op, i), in: doc)
            case "move", "copy":
                guard let from = op["from"]?.string else { throw InputError.patch("operation \(i): \(name) needs \"from\"") }
                let source = try JSONPointer(from)
                let v = try source.get(doc)
                if name == "move" { doc = try source.remove(from: doc) }
                doc = try pointer.add(v, to: doc)
            case "test":
                guard try pointer.get(doc) == (try value(op, i)) else { throw InputError.patch("operation \(i): test failed at \(path)") }
            default: throw InputError.patch("operation \(i): unknown op \"\(name)\"")
            }
        }
        return doc
    }

    private static func value(_ op: JSON, _ i: Int) throws -> JSON {
        guard let v = op["value"] else { throw InputError.patch("operation \(i): needs \"value\"") }
        return v
    }

    /// Kubernetes strategic merge patch: like a merge patch, but lists of objects with a merge key
    /// (containers by name, ports by containerPort or port, env by name, …) merge element by
    /// element; `$patch: delete|replace`, `$setElementOrder/…`, `$retainKeys` and
    /// `$deleteFromPrimitiveList/…` directives are honoured.
    public static func strategicMerge(_ target: JSON, _ patch: JSON) throws -> JSON {
        guard case .object(let p) = patch else { return patch }
        if p["$patch"]?.string == "replace" {
            var replaced = p
            replaced["$patch"] = nil
            return .object(replaced)
        }
        var result = target.object ?? JSONObject()
        var orders: [String: [JSON]] = [:]
        var retain: [String]?
        for (key, value) in p {
            if key == "$patch" { continue }
            if key == "$retainKeys" { retain = value.array?.compactMap(\.string); continue }
            if key.hasPrefix("$setElementOrder/") { orders[String(key.dropFirst("$setElementOrder/".count))] = value.array; continue }
            if key.hasPrefix("$deleteFromPrimitiveList/") {
                let field = String(key.dropFirst("$deleteFromPrimitiveList/".count))
                let drop = value.array ?? []
                if let list = result[field]?.array { result[field] = .array(list.filter { !drop.contains($0) }) }
                continue
            }
            if value.isNull { result[key] = nil; continue }
            switch (result[key], value) {
            case (.array(let current)?, .array(let patchList)):
                result[key] = .array(try mergeList(key, current, patchList))
            case (.object?, .object), (nil, .object), (.null?, .object):
                result[key] = try strategicMerge(result[key] ?? .null, value)
            case (_, .array(let patchList)):
                result[key] = .array(try mergeList(key, [], patchList))
            default:
                result[key] = value
            }
        }
        for (field, order) in orders {
            guard let list = result[field]?.array, let mergeKey = mergeKey(for: field, list + order) else { continue }
            let keys = order.compactMap { $0[mergeKey] }
            let ordered = keys.compactMap { k in list.first { $0[mergeKey] == k } }
            result[field] = .array(ordered + list.filter { e in !keys.contains { $0 == e[mergeKey] } })
        }
        if let retain {
            for key in result.keys where !retain.contains(key) { result[key] = nil }
        }
        return .object(result)
    }

    /// The field's merge key, from upstream's patchMergeKey tags, told apart by what the elements hold.
    static func mergeKey(for field: String, _ elements: [JSON]) -> String? {
        let candidates: [String]
        switch field {
        case "containers", "initContainers", "ephemeralContainers", "env", "volumes", "imagePullSecrets", "volumeClaimTemplates":
            candidates = ["name"]
        case "ports": candidates = ["containerPort", "port"]
        case "volumeMounts": candidates = ["mountPath"]
        case "volumeDevices": candidates = ["devicePath"]
        case "conditions": candidates = ["type"]
        case "ownerReferences": candidates = ["uid"]
        case "hostAliases": candidates = ["ip"]
        default: return nil
        }
        return candidates.first { c in elements.contains { $0[c] != nil } }
    }

    static func mergeList(_ field: String, _ current: [JSON], _ patch: [JSON]) throws -> [JSON] {
        guard patch.allSatisfy({ $0.object != nil }), let key = mergeKey(for: field, current + patch) else {
            return patch.filter { $0["$patch"] == nil }  // primitive or unkeyed lists are replaced
        }
        if patch.contains(where: { $0["$patch"]?.string == "replace" }) {
            return patch.filter { $0["$patch"]?.string != "replace" }
        }
        var result = current
        for element in patch {
            guard let k = element[key] else { throw InputError.patch("\(field): every element needs its merge key \"\(key)\"") }
            let index = result.firstIndex { $0[key] == k }
            if element["$patch"]?.string == "delete" {
                if let index { result.remove(at: index) }
            } else if let index {
                result[index] = try strategicMerge(result[index], element)
            } else {
                result.append(try strategicMerge(.null, element))
            }
        }
        return result
    }
}

/// RFC 6901 JSON pointer.
struct JSONPointer {
    let tokens: [String]

    init(_ text: String) throws {
        if text.isEmpty { tokens = []; return }
        guard text.hasPrefix("/") else { throw InputError.patch("path \"\(text)\" must start with /") }
        tokens = text.dropFirst().split(separator: "/", omittingEmptySubsequences: false).map {
            String($0).replacingAll("~1", "/").replacingAll("~0", "~")
        }
    }

    func get(_ doc: JSON) throws -> JSON {
        var current = doc
        for t in tokens {
            switch current {
            case .object(let o): guard let next = o[t] else { throw missing() }; current = next
            case .array(let a): guard let i = Int(t), a.indices.contains(i) else { throw missing() }; current = a[i]
            default: throw missing()
            }
        }
        return current
    }

    func missing() -> InputError { .patch( "path /\(tokens.joined(separator: "/")) does not exist") }

    func set(_ value: JSON, in doc: JSON) throws -> JSON { try edit(doc, tokens[...]) { _ in value } }

    func add(_ value: JSON, to doc: JSON) throws -> JSON {
        guard let last = tokens.last else { return value }
        return try JSONPointer(parentOf: self).editContainer(doc) { container in
            switch container {
            case .object(var o): o[last] = value; return .object(o)
            case .array(var a):
                if last == "-" { a.append(value) } else {
                    guard let i = Int(last), i >= 0, i <= a.count else { throw missing() }
                    a.insert(value, at: i)
                }
                return .array(a)
            default: throw missing()
            }
        }
    }

    func remove(from doc: JSON) throws -> JSON {
        guard let last = tokens.last else { throw InputError.patch("cannot remove the whole document") }
        return try JSONPointer(parentOf: self).editContainer(doc) { container in
            switch container {
            case .object(var o): guard o[last] != nil else { throw missing() }; o[last] = nil; return .object(o)
            case .array(var a): guard let i = Int(last), a.indices.contains(i) else { throw missing() }; a.remove(at: i); return .array(a)
            default: throw missing()
            }
        }
    }

    private init(parentOf pointer: JSONPointer) { tokens = Array(pointer.tokens.dropLast()) }

    private func editContainer(_ doc: JSON, _ change: (JSON) throws -> JSON) throws -> JSON {
        try edit(doc, tokens[...], change)
    }

    private func edit(_ node: JSON, _ rest: ArraySlice<String>, _ change: (JSON) throws -> JSON) throws -> JSON {
        guard let t = rest.first else { return try change(node) }
        switch node {
        case .object(var o):
            guard let child = o[t] else { throw missing() }
            o[t] = try edit(child, rest.dropFirst(), change)
            return .object(o)
        case .array(var a):
            guard let i = Int(t), a.indices.contains(i) else { throw missing() }
            a[i] = try edit(a[i], rest.dropFirst(), change)
            return .array(a)
        default: throw missing()
        }
    }
}

extension String {
    func replacingAll(_ target: String, _ replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var out = ""
        var rest = Substring(self)
        while let r = rest.firstRange(of: target) {
            out += rest[..<r.lowerBound] + replacement
            rest = rest[r.upperBound...]
        }
        return out + rest
    }
}
