/// The query string of a request, percent-decoded.
struct Query {
    private(set) var values: [String: [String]] = [:]

    init(_ raw: String?) {
        for pair in (raw ?? "").split(separator: "&") where !pair.isEmpty {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            values[Self.decode(kv[0]), default: []].append(kv.count > 1 ? Self.decode(kv[1]) : "")
        }
    }

    subscript(key: String) -> String? { values[key]?.first }
    /// A boolean parameter, spelled as Go's strconv.ParseBool reads it (the python client sends
    /// `watch=True`).
    func flag(_ key: String) -> Bool { ["1", "t", "T", "true", "TRUE", "True"].contains(self[key] ?? "") }

    /// A whole-number parameter (as upstream's int64 parameters), nil when absent; anything
    /// else, or a number outside `range`, is a 400 naming the parameter.
    func integer(_ key: String, in range: ClosedRange<Int64>) throws -> Int64? {
        guard let text = self[key] else { return nil }
        guard let value = Int64(text) else {
            throw APIError.badRequest("\(key): \"\(text.prefix(64))\" is not a whole number")
        }
        guard range.contains(value) else {
            throw APIError.badRequest("\(key): \(value) must be \(range.upperBound == .max ? "at least \(range.lowerBound)" : "from \(range.lowerBound) to \(range.upperBound)")")
        }
        return value
    }

    /// `dryRun=All` (kubectl --dry-run=server): true; absent: false; anything else is a 400, as
    /// upstream supports no other value.
    func dryRun() throws -> Bool {
        guard let values = values["dryRun"] else { return false }
        for value in values where value != "All" {
            throw APIError.badRequest("dryRun: Unsupported value: \"\(value.prefix(64))\": supported values: \"All\"")
        }
        return true
    }

    static func decode(_ s: Substring) -> String {
        var bytes: [UInt8] = []
        var i = s.utf8.startIndex
        let u = s.utf8
        while i < u.endIndex {
            let b = u[i]
            if b == UInt8(ascii: "+") {
                bytes.append(0x20)
            } else if b == UInt8(ascii: "%"), let h1 = u.index(i, offsetBy: 1, limitedBy: u.endIndex), h1 < u.endIndex,
                      let h2 = u.index(h1, offsetBy: 1, limitedBy: u.endIndex), h2 < u.endIndex,
                      let v = UInt8(String(decoding: [u[h1], u[h2]], as: UTF8.self), radix: 16) {
                bytes.append(v)
                i = h2
            } else {
                bytes.append(b)
            }
            i = u.index(after: i)
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
