import KemuAPI

/// The little of Kubernetes' protobuf encoding kemu reads: kubectl's typed commands (`kubectl
/// create namespace`, `kubectl auth can-i`, …) send protobuf bodies and do not fall back to JSON.
/// The envelope is the magic `k8s\0` and a runtime.Unknown {typeMeta, raw}; kemu decodes the raw
/// object only for kinds whose every field it has a schema for (`schemas`: field numbers from
/// upstream's generated.proto), and answers 415 for the rest rather than drop fields it cannot read.
enum Protobuf {
    static let magic: [UInt8] = [0x6B, 0x38, 0x73, 0x00]

    /// How one field of a message reads into JSON.
    indirect enum Field {
        case string(String)
        case strings(String)
        case metadata
        case message(String, [Int: Field])
        /// A repeated message: a JSON list.
        case messages(String, [Int: Field])
        /// map<string, string>: entries of {key 1, value 2}.
        case stringMap(String)
        /// A varint: int32/int64 (two's complement) and bool.
        case int(String)
        case bool(String)
    }

    static let resourceAttributes: [Int: Field] = [1: .string("namespace"), 2: .string("verb"), 3: .string("group"), 4: .string("version"),
                                                   5: .string("resource"), 6: .string("subresource"), 7: .string("name")]
    static let nonResourceAttributes: [Int: Field] = [1: .string("path"), 2: .string("verb")]
    static let accessReviewSpec: [Int: Field] = [1: .message("resourceAttributes", resourceAttributes),
                                                 2: .message("nonResourceAttributes", nonResourceAttributes),
                                                 3: .string("user"), 4: .strings("groups"), 6: .string("uid")]

    static let policyRules: Field = .messages("rules", [1: .strings("verbs"), 2: .strings("apiGroups"), 3: .strings("resources"),
                                                        4: .strings("resourceNames"), 5: .strings("nonResourceURLs")])
    static let labelSelector: [Int: Field] = [1: .stringMap("matchLabels"),
                                              2: .messages("matchExpressions", [1: .string("key"), 2: .string("operator"), 3: .strings("values")])]
    static let binding: [Int: Field] = [1: .metadata,
                                        2: .messages("subjects", [1: .string("kind"), 2: .string("apiGroup"), 3: .string("name"), 4: .string("namespace")]),
                                        3: .message("roleRef", [1: .string("apiGroup"), 2: .string("kind"), 3: .string("name")])]

    /// Kind → its message's fields, for the kinds whose create body kemu reads completely.
    static let schemas: [String: [Int: Field]] = [
        "Role": [1: .metadata, 2: policyRules],
        "ClusterRole": [1: .metadata, 2: policyRules, 3: .message("aggregationRule", [1: .messages("clusterRoleSelectors", labelSelector)])],
        "RoleBinding": binding,
        "ClusterRoleBinding": binding,
        "Namespace": [1: .metadata],
        "ServiceAccount": [1: .metadata, 2: .messages("secrets", [1: .string("kind"), 2: .string("namespace"), 3: .string("name")]),
                           3: .messages("imagePullSecrets", [1: .string("name")]), 4: .bool("automountServiceAccountToken")],
        "TokenRequest": [1: .metadata, 2: .message("spec", [1: .strings("audiences"), 4: .int("expirationSeconds"),
                                                            3: .message("boundObjectRef", [1: .string("kind"), 2: .string("apiVersion"),
                                                                                           3: .string("name"), 4: .string("uid")])])],
        "SelfSubjectReview": [1: .metadata],
        "SelfSubjectAccessReview": [1: .metadata, 2: .message("spec", [1: .message("resourceAttributes", resourceAttributes),
                                                                       2: .message("nonResourceAttributes", nonResourceAttributes)])],
        "SelfSubjectRulesReview": [1: .metadata, 2: .message("spec", [1: .string("namespace")])],
        "SubjectAccessReview": [1: .metadata, 2: .message("spec", accessReviewSpec)],
        "LocalSubjectAccessReview": [1: .metadata, 2: .message("spec", accessReviewSpec)],
    ]

    static func decode(_ bytes: [UInt8]) throws -> JSON {
        guard bytes.starts(with: magic) else { throw APIError.badRequest("protobuf body without the k8s magic") }
        var unknown = Reader(bytes[4...])
        var apiVersion = "", kind = "", raw: ArraySlice<UInt8> = []
        while let (field, value) = try unknown.next() {
            switch (field, value) {
            case (1, .bytes(let typeMeta)):
                var t = Reader(typeMeta)
                while let (f, v) = try t.next() {
                    if case .bytes(let b) = v { if f == 1 { apiVersion = b.string } else if f == 2 { kind = b.string } }
                }
            case (2, .bytes(let b)): raw = b
            default: break
            }
        }
        guard let schema = schemas[kind] else {
            throw APIError.unsupportedMediaType("kemu reads protobuf bodies only for \(schemas.keys.sorted().joined(separator: ", ")), not \(kind): send JSON (kubectl create -f)")
        }
        var object = try message(raw, schema)
        object["kind"] = .string(kind)
        object["apiVersion"] = .string(apiVersion)
        return object
    }

    /// One message by its schema; fields it does not list are skipped.
    static func message(_ bytes: ArraySlice<UInt8>, _ schema: [Int: Field]) throws -> JSON {
        var object = JSONObject()
        var r = Reader(bytes)
        while let (number, value) = try r.next() {
            guard let field = schema[number] else { continue }
            if case .varint(let v) = value {
                switch field {
                case .int(let name): object[name] = .int(Int64(bitPattern: v))
                case .bool(let name): object[name] = .bool(v != 0)
                default: break
                }
                continue
            }
            guard case .bytes(let b) = value else { continue }
            switch field {
            case .int, .bool: continue
            case .string(let name): if !b.isEmpty { object[name] = .string(b.string) }  // Go's omitempty
            case .strings(let name): object[name] = .array((object[name]?.array ?? []) + [.string(b.string)])
            case .metadata: object["metadata"] = try objectMeta(b)
            case .message(let name, let fields): object[name] = try message(b, fields)
            case .messages(let name, let fields): object[name] = .array((object[name]?.array ?? []) + [try message(b, fields)])
            case .stringMap(let name):
                let (key, value) = try entry(b)
                var map = object[name]?.object ?? JSONObject()
                map[key] = .string(value)
                object[name] = .object(map)
            }
        }
        return .object(object)
    }

    static func objectMeta(_ bytes: ArraySlice<UInt8>) throws -> JSON {
        var meta = JSONObject()
        var labels: [String: String] = [:], annotations: [String: String] = [:]
        var r = Reader(bytes)
        while let (field, value) = try r.next() {
            guard case .bytes(let b) = value, !b.isEmpty else { continue }
            switch field {
            case 1: meta["name"] = .string(b.string)
            case 2: meta["generateName"] = .string(b.string)
            case 3: meta["namespace"] = .string(b.string)
            case 11, 12:
                let (key, val) = try entry(b)
                if field == 11 { labels[key] = val } else { annotations[key] = val }
            default: break
            }
        }
        if !labels.isEmpty { meta["labels"] = JSON.stringMapJSON(labels) }
        if !annotations.isEmpty { meta["annotations"] = JSON.stringMapJSON(annotations) }
        return .object(meta)
    }

    /// One map<string, string> entry.
    static func entry(_ bytes: ArraySlice<UInt8>) throws -> (String, String) {
        var r = Reader(bytes)
        var key = "", value = ""
        while let (f, v) = try r.next() {
            if case .bytes(let s) = v { if f == 1 { key = s.string } else if f == 2 { value = s.string } }
        }
        return (key, value)
    }

    enum Value { case varint(UInt64), bytes(ArraySlice<UInt8>), fixed }

    /// Protocol buffers wire format: (field << 3 | wire type) keys, varints, length-delimited bytes.
    struct Reader {
        var bytes: ArraySlice<UInt8>
        init(_ bytes: ArraySlice<UInt8>) { self.bytes = bytes }

        mutating func varint() throws -> UInt64 {
            var result: UInt64 = 0, shift: UInt64 = 0
            while let b = bytes.popFirst() {
                guard shift < 64 else { break }
                result |= UInt64(b & 0x7F) << shift
                if b & 0x80 == 0 { return result }
                shift += 7
            }
            throw APIError.badRequest("truncated protobuf body")
        }

        mutating func next() throws -> (Int, Value)? {
            guard !bytes.isEmpty else { return nil }
            let key = try varint()
            let field = Int(key >> 3)
            switch key & 7 {
            case 0: return (field, .varint(try varint()))
            case 2:
                guard let n = Int(exactly: try varint()), n <= bytes.count else { throw APIError.badRequest("truncated protobuf body") }
                let value = bytes.prefix(n)
                bytes = bytes.dropFirst(n)
                return (field, .bytes(value))
            case 1: guard bytes.count >= 8 else { throw APIError.badRequest("truncated protobuf body") }; bytes = bytes.dropFirst(8); return (field, .fixed)
            case 5: guard bytes.count >= 4 else { throw APIError.badRequest("truncated protobuf body") }; bytes = bytes.dropFirst(4); return (field, .fixed)
            default: throw APIError.badRequest("unsupported protobuf wire type \(key & 7)")
            }
        }
    }
}

extension ArraySlice<UInt8> {
    var string: String { String(decoding: self, as: UTF8.self) }
}
