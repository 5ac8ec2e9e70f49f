import KemuAPI

/// The little of Kubernetes' protobuf encoding kemu reads: kubectl's typed commands (`kubectl
/// create namespace`, …) send protobuf bodies and do not fall back to JSON. The envelope is the
/// magic `k8s\0` and a runtime.Unknown {typeMeta, raw}; kemu decodes the raw object only for kinds
/// whose create body is nothing but ObjectMeta, and answers 415 for the rest rather than drop
/// fields it cannot read.
enum Protobuf {
    static let magic: [UInt8] = [0x6B, 0x38, 0x73, 0x00]
    /// Kinds whose protobuf body kemu reads completely (metadata; spec and status empty on create).
    static let decodable: Set<String> = ["Namespace"]

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
        guard decodable.contains(kind) else {
            throw APIError.unsupportedMediaType("kemu reads protobuf bodies only for \(decodable.sorted().joined(separator: ", ")), not \(kind): send JSON (kubectl create -f)")
        }
        var object: JSON = ["kind": .string(kind), "apiVersion": .string(apiVersion)]
        var message = Reader(raw)
        while let (field, value) = try message.next() {
            if field == 1, case .bytes(let meta) = value { object["metadata"] = try objectMeta(meta) }
        }
        return object
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
                var entry = Reader(b)
                var key = "", val = ""
                while let (f, v) = try entry.next() {
                    if case .bytes(let s) = v { if f == 1 { key = s.string } else { val = s.string } }
                }
                if field == 11 { labels[key] = val } else { annotations[key] = val }
            default: break
            }
        }
        if !labels.isEmpty { meta["labels"] = JSON.stringMapJSON(labels) }
        if !annotations.isEmpty { meta["annotations"] = JSON.stringMapJSON(annotations) }
        return .object(meta)
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
