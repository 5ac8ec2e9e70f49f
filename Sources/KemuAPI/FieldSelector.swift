/// A field selector: `metadata.name=web,status.phase!=Failed,involvedObject.namespace=`. Terms are
/// ANDed; a field is a dotted path into the object, and a missing field reads as "".
public struct FieldSelector: Sendable, Equatable, CustomStringConvertible {
    public struct Term: Sendable, Equatable {
        public var field: String
        public var value: String
        public var negated: Bool
    }

    public var terms: [Term]

    public init(_ terms: [Term] = []) { self.terms = terms }

    public static let everything = FieldSelector()

    /// Parses the query form; `\,`, `\=` and `\\` escape those characters in values.
    public init(parsing text: String) throws {
        var terms: [Term] = []
        for raw in Self.split(text, on: ",") where !raw.isEmpty {
            // The first operator from the left: in `a=b!=c` the value of a is "b!=c".
            let chars = Array(raw)
            let isOperator = { (i: Int) in chars[i] == "=" || (chars[i] == "!" && i + 1 < chars.count && chars[i + 1] == "=") }
            guard let opStart = chars.indices.first(where: isOperator) else {
                throw InputError.selector("invalid selector: '\(text)'; can't understand '\(raw)'")
            }
            let negated = chars[opStart] == "!"
            let doubled = negated || (opStart + 1 < chars.count && chars[opStart + 1] == "=")
            let opEnd = opStart + (doubled ? 2 : 1)
            let parts = [String(chars[..<opStart]), String(chars[opEnd...])]
            let field = parts[0].trimmingSpaces
            guard !field.isEmpty else { throw InputError.selector("invalid selector: '\(text)'; field name missing in '\(raw)'") }
            terms.append(Term(field: field, value: Self.unescape(parts[1]), negated: negated))
        }
        self.init(terms)
    }

    /// Whether `object` matches every term.
    public func matches(_ object: JSON) -> Bool {
        terms.allSatisfy { term in
            // An Event's `source` is its source.component, as upstream's event field selector has it.
            let actual = Self.fieldValue(object[path: term.field == "source" ? "source.component" : term.field])
            return (actual == term.value) != term.negated
        }
    }

    /// The one `metadata.name=` value, when the selector pins a name (informers always do).
    public var name: String? { terms.first { $0.field == "metadata.name" && !$0.negated }?.value }

    public var description: String {
        terms.map { "\($0.field)\($0.negated ? "!=" : "=")\($0.value)" }.joined(separator: ",")
    }

    static func fieldValue(_ value: JSON?) -> String {
        switch value {
        case .string(let s): s
        case .int(let i): String(i)
        case .bool(let b): b ? "true" : "false"
        case .double(let d): String(d)
        default: ""
        }
    }

    static func split(_ text: String, on separator: Character) -> [String] {
        var parts: [String] = [], current = "", escaped = false
        for c in text {
            if escaped { current.append("\\"); current.append(c); escaped = false }
            else if c == "\\" { escaped = true }
            else if c == separator { parts.append(current); current = "" }
            else { current.append(c) }
        }
        if escaped { current.append("\\") }
        parts.append(current)
        return parts
    }

    static func unescape(_ s: String) -> String {
        var out = "", escaped = false
        for c in s {
            if escaped { out.append(c); escaped = false } else if c == "\\" { escaped = true } else { out.append(c) }
        }
        return out
    }
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while s.first == " " { s = s.dropFirst() }
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}
