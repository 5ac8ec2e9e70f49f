/// A JSON value. Objects keep their keys in the order they were written, so what a client sent
/// comes back the way it sent it (`kubectl get -o yaml` reads naturally), and fields kemu does not
/// model are kept, not dropped.
public enum JSON: Sendable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSON])
    case object(JSONObject)

    public var string: String? { if case .string(let s) = self { s } else { nil } }
    public var bool: Bool? { if case .bool(let b) = self { b } else { nil } }
    public var int: Int64? {
        switch self {
        case .int(let i): i
        case .double(let d) where d.rounded() == d && abs(d) < 9.2e18: Int64(d)
        default: nil
        }
    }
    public var array: [JSON]? { if case .array(let a) = self { a } else { nil } }
    public var object: JSONObject? { if case .object(let o) = self { o } else { nil } }
    public var isNull: Bool { self == .null }

    /// Member of an object; nil for a missing key or a non-object. Setting nil removes the key;
    /// setting on `.null` makes it an object.
    public subscript(key: String) -> JSON? {
        get { object?[key] }
        set {
            var o = object ?? JSONObject()
            o[key] = newValue
            self = .object(o)
        }
    }

    /// The value at a dotted path: `json[path: "metadata.name"]`.
    /// Hot (every controller and list filter reads fields by path): walks the path in place, no
    /// array of parts; short keys are small strings, so a lookup allocates nothing.
    public subscript(path path: String) -> JSON? {
        var current = self
        var start = path.startIndex
        while true {
            let end = path[start...].firstIndex(of: ".") ?? path.endIndex
            guard let next = current.object?[String(path[start..<end])] else { return nil }
            if end == path.endIndex { return next }
            current = next
            start = path.index(after: end)
        }
    }
}

extension JSON: Equatable {
    /// JSON has one number type: 2 and 2.0 are equal.
    public static func == (a: JSON, b: JSON) -> Bool {
        switch (a, b) {
        case (.null, .null): true
        case (.bool(let x), .bool(let y)): x == y
        case (.int(let x), .int(let y)): x == y
        case (.double(let x), .double(let y)): x == y
        case (.int(let x), .double(let y)), (.double(let y), .int(let x)): Double(x) == y
        case (.string(let x), .string(let y)): x == y
        case (.array(let x), .array(let y)): x == y
        case (.object(let x), .object(let y)): x == y
        default: false
        }
    }
}

/// A JSON object with ordered keys.
public struct JSONObject: Sendable, Equatable, Sequence {
    public private(set) var keys: [String] = []
    private var values: [String: JSON] = [:]

    public init() {}

    public init(_ pairs: KeyValuePairs<String, JSON>) {
        for (k, v) in pairs { self[k] = v }
    }

    public var count: Int { keys.count }
    public var isEmpty: Bool { keys.isEmpty }

    public subscript(key: String) -> JSON? {
        get { values[key] }
        set {
            if let newValue {
                if values.updateValue(newValue, forKey: key) == nil { keys.append(key) }
            } else if values.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }

    public func makeIterator() -> some IteratorProtocol<(key: String, value: JSON)> {
        keys.lazy.map { ($0, values[$0]!) }.makeIterator()
    }

    /// Same members, order ignored: JSON's own notion of object equality.
    public static func == (a: JSONObject, b: JSONObject) -> Bool { a.values == b.values }
}

// Deliberately not ExpressibleByNilLiteral: `cond ? nil : value` must mean "no value" (remove the
// key), never a silent JSON null.
extension JSON: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByFloatLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(arrayLiteral elements: JSON...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSON)...) {
        var o = JSONObject()
        for (k, v) in elements { o[k] = v }
        self = .object(o)
    }
}
