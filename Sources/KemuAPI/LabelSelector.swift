/// A label selector: the string grammar of `?labelSelector=` and `kubectl -l`, and the
/// `matchLabels` / `matchExpressions` form of object specs. Requirements are ANDed.
public struct LabelSelector: Sendable, Equatable, CustomStringConvertible {
    public enum Operator: String, Sendable {
        case equals = "=", notEquals = "!=", `in` = "in", notIn = "notin", exists = "exists", doesNotExist = "!"
        case greaterThan = "gt", lessThan = "lt"
    }

    public struct Requirement: Sendable, Equatable {
        public var key: String
        public var op: Operator
        public var values: [String]

        func matches(_ labels: [String: String]) -> Bool {
            let value = labels[key]
            switch op {
            case .equals: return value == values.first
            case .notEquals: return value != values.first
            case .in: return value.map(values.contains) ?? false
            case .notIn: return value.map { !values.contains($0) } ?? true
            case .exists: return value != nil
            case .doesNotExist: return value == nil
            case .greaterThan, .lessThan:
                guard let v = value.flatMap({ Int64($0) }), let bound = values.first.flatMap({ Int64($0) }) else { return false }
                return op == .greaterThan ? v > bound : v < bound
            }
        }
    }

    public var requirements: [Requirement]
    /// A nil selector (`selector` absent) selects nothing; an empty one selects everything.
    public var matchesNothing = false

    public init(_ requirements: [Requirement] = []) { self.requirements = requirements }

    public static let everything = LabelSelector()
    public static let nothing: LabelSelector = { var s = LabelSelector(); s.matchesNothing = true; return s }()

    public func matches(_ labels: [String: String]) -> Bool {
        !matchesNothing && requirements.allSatisfy { $0.matches(labels) }
    }

    public var isEmpty: Bool { requirements.isEmpty && !matchesNothing }

    public var description: String {
        requirements.map { r in
            switch r.op {
            case .equals, .notEquals: "\(r.key)\(r.op.rawValue)\(r.values.first ?? "")"
            case .in, .notIn: "\(r.key) \(r.op.rawValue) (\(r.values.joined(separator: ",")))"
            case .exists: r.key
            case .doesNotExist: "!\(r.key)"
            case .greaterThan: "\(r.key)>\(r.values.first ?? "")"
            case .lessThan: "\(r.key)<\(r.values.first ?? "")"
            }
        }.joined(separator: ",")
    }
}

extension LabelSelector {
    /// Parses `app=web,tier!=db,env in (prod,staging),!legacy,release`.
    public init(parsing text: String) throws {
        var lexer = SelectorLexer(Array(text.unicodeScalars))
        var requirements: [Requirement] = []
        lexer.skipSpace()
        while !lexer.atEnd {
            requirements.append(try lexer.requirement(in: text))
            lexer.skipSpace()
            if lexer.atEnd { break }
            guard lexer.take(",") else { throw InputError.selector("unable to parse requirement: found '\(lexer.rest)', expected: ','") }
            lexer.skipSpace()
            if lexer.atEnd { throw InputError.selector("unable to parse requirement: found '', expected: identifier after ','") }
        }
        self.init(requirements)
    }

    /// The metav1.LabelSelector form: `{matchLabels: {…}, matchExpressions: [{key, operator, values}]}`.
    /// A missing selector (nil) selects nothing; `{}` selects everything.
    public init(json: JSON?) throws {
        guard let json, !json.isNull else { self = .nothing; return }
        guard json.object != nil else { throw InputError.selector("selector must be an object") }
        var requirements: [Requirement] = []
        for (key, value) in json["matchLabels"]?.object ?? JSONObject() {
            guard let v = value.string else { throw InputError.selector("matchLabels.\(key): must be a string") }
            try validateKey(key)
            try validateValue(v)
            requirements.append(Requirement(key: key, op: .equals, values: [v]))
        }
        for (i, e) in (json["matchExpressions"]?.array ?? []).enumerated() {
            guard let key = e["key"]?.string else { throw InputError.selector("matchExpressions[\(i)].key: Required value") }
            try validateKey(key)
            let values = (e["values"]?.array ?? []).compactMap(\.string)
            let op: Operator
            switch e["operator"]?.string {
            case "In": op = .in
            case "NotIn": op = .notIn
            case "Exists": op = .exists
            case "DoesNotExist": op = .doesNotExist
            default: throw InputError.selector("matchExpressions[\(i)].operator: \"\(e["operator"]?.string ?? "")\" is not a valid label selector operator")
            }
            if (op == .in || op == .notIn) && values.isEmpty {
                throw InputError.selector("matchExpressions[\(i)].values: must be specified when `operator` is 'In' or 'NotIn'")
            }
            if (op == .exists || op == .doesNotExist) && !values.isEmpty {
                throw InputError.selector("matchExpressions[\(i)].values: may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
            }
            requirements.append(Requirement(key: key, op: op, values: values))
        }
        self.init(requirements)
    }

    /// An equality-only selector (`spec.selector` of Services and ReplicationControllers).
    public init(matchLabels: [String: String]) {
        self.init(matchLabels.keys.sorted().map { Requirement(key: $0, op: .equals, values: [matchLabels[$0]!]) })
    }
}

/// Label keys: an optional DNS-subdomain prefix and '/', then a name of at most 63 characters.
public func validateKey(_ key: String) throws {
    let parts = key.split(separator: "/", omittingEmptySubsequences: false)
    guard parts.count <= 2, let name = parts.last, isQualifiedName(name),
          parts.count == 1 || (parts[0].count <= 253 && parts[0].split(separator: ".", omittingEmptySubsequences: false).allSatisfy { isDNSLabelPart($0) }) else {
        throw InputError.selector("invalid label key \"\(key)\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most 63), with an optional DNS subdomain prefix and '/'")
    }
}

public func validateValue(_ value: String) throws {
    guard value.isEmpty || isQualifiedName(Substring(value)) else {
        throw InputError.selector("invalid label value: \"\(value)\": must be 63 characters or less, alphanumeric, '-', '_' or '.', starting and ending with an alphanumeric character")
    }
}

func isQualifiedName(_ s: Substring) -> Bool {
    guard (1...63).contains(s.count), let f = s.first, let l = s.last, isAlnum(f), isAlnum(l) else { return false }
    return s.allSatisfy { isAlnum($0) || $0 == "-" || $0 == "_" || $0 == "." }
}

func isDNSLabelPart(_ s: Substring) -> Bool {
    guard (1...63).contains(s.count), let f = s.first, let l = s.last, isLowerAlnum(f), isLowerAlnum(l) else { return false }
    return s.allSatisfy { isLowerAlnum($0) || $0 == "-" }
}

func isAlnum(_ c: Character) -> Bool { c.isASCII && (c.isLetter || c.isNumber) }
func isLowerAlnum(_ c: Character) -> Bool { c.isASCII && (c.isLowercase || c.isNumber) }

struct SelectorLexer {
    let scalars: [Unicode.Scalar]
    var at = 0

    init(_ scalars: [Unicode.Scalar]) { self.scalars = scalars }

    var atEnd: Bool { at >= scalars.count }
    var rest: String { String(String.UnicodeScalarView(scalars[at...])) }
    func peek(_ s: String) -> Bool {
        let u = Array(s.unicodeScalars)
        return at + u.count <= scalars.count && Array(scalars[at..<at + u.count]) == u
    }
    mutating func take(_ s: String) -> Bool {
        guard peek(s) else { return false }
        at += s.unicodeScalars.count
        return true
    }
    mutating func skipSpace() { while !atEnd, scalars[at] == " " || scalars[at] == "\t" { at += 1 } }

    static let stop: Set<Unicode.Scalar> = [" ", "\t", ",", "=", "!", "(", ")", "<", ">"]

    mutating func word() -> String {
        let start = at
        while !atEnd, !Self.stop.contains(scalars[at]) { at += 1 }
        return String(String.UnicodeScalarView(scalars[start..<at]))
    }

    mutating func requirement(in text: String) throws -> LabelSelector.Requirement {
        if take("!") {
            skipSpace()
            let key = word()
            try validateKey(key)
            return .init(key: key, op: .doesNotExist, values: [])
        }
        let key = word()
        guard !key.isEmpty else { throw InputError.selector("unable to parse requirement: found '\(rest)', expected: identifier") }
        try validateKey(key)
        skipSpace()
        if atEnd || peek(",") { return .init(key: key, op: .exists, values: []) }
        let op: LabelSelector.Operator
        if take("==") || take("=") { op = .equals }
        else if take("!=") { op = .notEquals }
        else if take(">") { op = .greaterThan }
        else if take("<") { op = .lessThan }
        else {
            let w = word()
            switch w {
            case "in": op = .in
            case "notin": op = .notIn
            default: throw InputError.selector("unable to parse requirement: found '\(w)', expected: in, notin, =, ==, !=, gt, lt")
            }
            skipSpace()
            guard take("(") else { throw InputError.selector("unable to parse requirement: found '\(rest)', expected: '('") }
            var values: [String] = []
            while true {
                skipSpace()
                let v = word()
                try validateValue(v)
                if !v.isEmpty { values.append(v) }
                skipSpace()
                if take(")") { break }
                guard take(",") else { throw InputError.selector("unable to parse requirement: found '\(rest)', expected: ',' or ')'") }
            }
            return .init(key: key, op: op, values: values)
        }
        skipSpace()
        let value = word()
        try validateValue(value)
        if op == .greaterThan || op == .lessThan, Int64(value) == nil {
            throw InputError.selector("unable to parse requirement: for 'gt', 'lt' operators, the value must be an integer")
        }
        return .init(key: key, op: op, values: [value])
    }
}
