import Foundation
import KemuAPI

/// Kubernetes' protobuf encoding, read into the JSON kemu stores: kubectl's typed commands
/// (`kubectl create deployment|configmap|service|namespace|role…`, `auth can-i`) and client-go's
/// typed clients send protobuf bodies and do not fall back to JSON. The envelope is the magic
/// `k8s\0` and a runtime.Unknown {typeMeta, raw}; the raw object is read by its message's field
/// table (`Protobuf.messages`, field numbers from upstream's generated.proto files). Go's encoder
/// writes every non-pointer field, zeros included, so zero values of value fields are dropped
/// (JSON's omitempty) while pointer fields keep them. A field the tables do not know is refused
/// with 415 naming it when it carries a value — never silently dropped — and passed over when it
/// holds only zeros (what Go writes for a field left alone).
enum Protobuf {
    static let magic: [UInt8] = [0x6B, 0x38, 0x73, 0x00]

    /// How one field of a message reads into JSON.
    enum Field {
        /// A value string (omitempty).
        case string(String)
        case strings(String)
        /// bytes, base64 in JSON.
        case bytes(String)
        /// A value integer: zero is dropped.
        case int(String)
        /// A pointer integer (`*int32`): zero is kept.
        case optionalInt(String)
        /// repeated int64/int32, packed or not.
        case ints(String)
        /// A value bool: false is dropped.
        case bool(String)
        /// A pointer bool: false is kept.
        case optionalBool(String)
        /// A message of the named type (an empty one is kept: `emptyDir: {}` means something).
        case message(String, String)
        case messages(String, String)
        /// An embedded struct whose fields Go's JSON inlines into the parent (LocalObjectReference
        /// in a key selector, ProbeHandler in a Probe, VolumeSource in a Volume).
        case inline(String)
        /// map<string, string>, map<string, bytes> (base64), map<string, Quantity>.
        case stringMap(String)
        case bytesMap(String)
        case quantityMap(String)
        /// intstr.IntOrString {type 1, intVal 2, strVal 3}.
        case intOrString(String)
        /// resource.Quantity {string 1}.
        case quantity(String)
        /// metav1.Time / MicroTime {seconds 1, nanos 2}, as RFC 3339.
        case time(String)
        case microTime(String)
        /// Read and dropped: fields the server owns and rewrites (managedFields).
        case ignored
        /// A status sent with a create or update of the object itself: the server sets status
        /// there, and Go's encoder sends an empty one full of zero values, which is dropped. A
        /// status that says something is refused (kemu reads statuses as JSON only).
        case status
    }

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
        // A kind that two groups share with different fields is named with its group version.
        let table = messages["\(apiVersion).\(kind)"] != nil ? "\(apiVersion).\(kind)" : kind
        guard kinds.contains(kind), messages[table] != nil else {
            throw APIError.unsupportedMediaType("kemu reads no protobuf body of kind \"\(kind)\": send JSON (kubectl create -f, kubectl apply)")
        }
        var object = try message(raw, table, path: kind)
        object["kind"] = .string(kind)
        object["apiVersion"] = .string(apiVersion)
        return object
    }

    /// One message by its table. `path` names where it sits, for errors.
    static func message(_ bytes: ArraySlice<UInt8>, _ type: String, path: String) throws -> JSON {
        var object = JSONObject()
        try read(bytes, type, path: path, into: &object)
        return .object(object)
    }

    static func read(_ bytes: ArraySlice<UInt8>, _ type: String, path: String, into object: inout JSONObject) throws {
        guard let table = messages[type] else { throw APIError(code: 500, reason: "InternalError", message: "no protobuf table for \(type)") }
        var r = Reader(bytes)
        while let (number, value) = try r.next() {
            guard let field = table[number] else {
                if !value.isZero {
                    throw APIError.unsupportedMediaType("kemu cannot read field \(number) of \(type) (\(path)) in a protobuf body: send JSON (kubectl create -f, kubectl apply)")
                }
                continue
            }
            try read(field, value, path: path, into: &object)
        }
    }

    static func read(_ field: Field, _ value: Value, path: String, into object: inout JSONObject) throws {
        switch (field, value) {
        case (.ignored, _): return
        case (.status, .bytes(let b)):
            if !isZero(b, depth: 0) {
                throw APIError.unsupportedMediaType("kemu cannot read \(path).status in a protobuf body: send JSON")
            }
        case (.int(let name), .varint(let v)): if v != 0 { object[name] = .int(Int64(bitPattern: v)) }
        case (.optionalInt(let name), .varint(let v)): object[name] = .int(Int64(bitPattern: v))
        case (.ints(let name), .varint(let v)): object[name] = .array((object[name]?.array ?? []) + [.int(Int64(bitPattern: v))])
        case (.ints(let name), .bytes(let b)):
            var packed = Reader(b)
            var values = object[name]?.array ?? []
            while !packed.bytes.isEmpty { values.append(.int(Int64(bitPattern: try packed.varint()))) }
            object[name] = .array(values)
        case (.bool(let name), .varint(let v)): if v != 0 { object[name] = true }
        case (.optionalBool(let name), .varint(let v)): object[name] = .bool(v != 0)
        case (.string(let name), .bytes(let b)): if !b.isEmpty { object[name] = .string(try text(b, name, path)) }
        case (.strings(let name), .bytes(let b)): object[name] = .array((object[name]?.array ?? []) + [.string(try text(b, name, path))])
        case (.bytes(let name), .bytes(let b)): if !b.isEmpty { object[name] = .string(Data(b).base64EncodedString()) }
        case (.message(let name, let type), .bytes(let b)): object[name] = try message(b, type, path: "\(path).\(name)")
        case (.messages(let name, let type), .bytes(let b)):
            object[name] = .array((object[name]?.array ?? []) + [try message(b, type, path: "\(path).\(name)")])
        case (.inline(let type), .bytes(let b)): try read(b, type, path: path, into: &object)
        case (.stringMap(let name), .bytes(let b)), (.bytesMap(let name), .bytes(let b)), (.quantityMap(let name), .bytes(let b)):
            var map = object[name]?.object ?? JSONObject()
            let (key, raw) = try entry(b)
            let key_ = try text(key, name, path)
            switch field {
            case .bytesMap: map[key_] = .string(Data(raw).base64EncodedString())
            case .quantityMap: map[key_] = .string(try quantity(raw, "\(path).\(name)"))
            default: map[key_] = .string(try text(raw, name, path))
            }
            object[name] = .object(map)
        case (.intOrString(let name), .bytes(let b)):
            var r = Reader(b)
            var isString = false, number: Int64 = 0, string = ""
            while let (f, v) = try r.next() {
                switch (f, v) {
                case (1, .varint(let t)): isString = t == 1
                case (2, .varint(let n)): number = Int64(Int32(truncatingIfNeeded: n))
                case (3, .bytes(let s)): string = try text(s, name, path)
                default: break
                }
            }
            object[name] = isString ? .string(string) : .int(number)
        case (.quantity(let name), .bytes(let b)): object[name] = .string(try quantity(b, "\(path).\(name)"))
        case (.time(let name), .bytes(let b)), (.microTime(let name), .bytes(let b)):
            var r = Reader(b)
            var seconds: Int64 = 0, nanos: Int64 = 0
            while let (f, v) = try r.next() {
                if case .varint(let n) = v { if f == 1 { seconds = Int64(bitPattern: n) } else if f == 2 { nanos = Int64(bitPattern: n) } }
            }
            guard seconds != 0 || nanos != 0 else { return }  // Go's zero time: null, left out
            guard seconds > -(1 << 40), seconds < 1 << 40, (0..<1_000_000_000).contains(nanos) else {
                throw APIError.badRequest("\(path).\(name): time out of range")
            }
            let date = Date(timeIntervalSince1970: Double(seconds) + Double(nanos) / 1e9)
            if case .microTime = field { object[name] = .string(Timestamp.formatMicro(date)) } else { object[name] = .string(Timestamp.format(date)) }
        default:
            throw APIError.badRequest("\(path): a field of \(object.isEmpty ? "the object" : "it") has the wrong protobuf wire type")
        }
    }

    /// Whether a message holds nothing but zero values (as far as can be told without its table:
    /// a length-delimited field must be empty or itself such a message).
    static func isZero(_ bytes: ArraySlice<UInt8>, depth: Int) -> Bool {
        guard depth < 16 else { return false }
        var r = Reader(bytes)
        do {
            while let (_, value) = try r.next() {
                switch value {
                case .varint(let v), .fixed(let v): if v != 0 { return false }
                case .bytes(let b): if !b.isEmpty && !isZero(b, depth: depth + 1) { return false }
                }
            }
            return true
        } catch {
            return false
        }
    }

    static func text(_ bytes: ArraySlice<UInt8>, _ name: String, _ path: String) throws -> String {
        guard let s = String(validating: bytes, as: UTF8.self) else { throw APIError.badRequest("\(path).\(name): not UTF-8") }
        return s
    }

    /// resource.Quantity: its canonical string in field 1.
    static func quantity(_ bytes: ArraySlice<UInt8>, _ path: String) throws -> String {
        var r = Reader(bytes)
        var string = ""
        while let (f, v) = try r.next() { if f == 1, case .bytes(let s) = v { string = try text(s, "string", path) } }
        return string
    }

    /// One map entry: key 1, value 2.
    static func entry(_ bytes: ArraySlice<UInt8>) throws -> (ArraySlice<UInt8>, ArraySlice<UInt8>) {
        var r = Reader(bytes)
        var key: ArraySlice<UInt8> = [], value: ArraySlice<UInt8> = []
        while let (f, v) = try r.next() {
            if case .bytes(let s) = v { if f == 1 { key = s } else if f == 2 { value = s } }
        }
        return (key, value)
    }

    enum Value {
        case varint(UInt64), bytes(ArraySlice<UInt8>), fixed(UInt64)
        /// What Go writes for a zero value of a field: 0, "", or a message of zeros (a status
        /// of a review that the server fills in, say).
        var isZero: Bool {
            switch self {
            case .varint(let v), .fixed(let v): v == 0
            case .bytes(let b): b.isEmpty || Protobuf.isZero(b, depth: 0)
            }
        }
    }

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

        mutating func fixed(_ count: Int) throws -> UInt64 {
            guard bytes.count >= count else { throw APIError.badRequest("truncated protobuf body") }
            let value = bytes.prefix(count).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            bytes = bytes.dropFirst(count)
            return value
        }

        mutating func next() throws -> (Int, Value)? {
            guard !bytes.isEmpty else { return nil }
            let key = try varint()
            guard let field = Int(exactly: key >> 3), field > 0 else { throw APIError.badRequest("protobuf field number 0") }
            switch key & 7 {
            case 0: return (field, .varint(try varint()))
            case 2:
                guard let n = Int(exactly: try varint()), n <= bytes.count else { throw APIError.badRequest("truncated protobuf body") }
                let value = bytes.prefix(n)
                bytes = bytes.dropFirst(n)
                return (field, .bytes(value))
            case 1: return (field, .fixed(try fixed(8)))
            case 5: return (field, .fixed(try fixed(4)))
            default: throw APIError.badRequest("unsupported protobuf wire type \(key & 7)")
            }
        }
    }
}

extension ArraySlice<UInt8> {
    var string: String { String(decoding: self, as: UTF8.self) }
}
