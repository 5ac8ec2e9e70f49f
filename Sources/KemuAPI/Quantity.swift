/// Kubernetes resource quantities (`500m`, `2`, `128Mi`, `1G`, `1.5`, `1e3`), as thousandths of
/// the unit: CPU in millicores, memory in thousandths of a byte, so both compare as integers.
/// Exact integer arithmetic; fractions of a thousandth round up, as upstream rounds requests.
public enum Quantity {
    /// Suffix → (power of two, power of ten).
    static let suffixes: [(String, Int, Int)] = [
        ("Ki", 10, 0), ("Mi", 20, 0), ("Gi", 30, 0), ("Ti", 40, 0), ("Pi", 50, 0), ("Ei", 60, 0),
        ("n", 0, -9), ("u", 0, -6), ("m", 0, -3), ("k", 0, 3), ("M", 0, 6), ("G", 0, 9), ("T", 0, 12), ("P", 0, 15), ("E", 0, 18),
    ]

    /// Thousandths of the unit; nil for what is not a quantity. A JSON number is a plain count.
    public static func milli(_ value: JSON?) -> Int64? {
        switch value {
        case .int(let n)?: return n < 0 ? nil : scale(n, binary: 0, decimal: 3)
        case .double(let d)?: return d < 0 || !d.isFinite ? nil : milli(String(d))
        case .string(let text)?: return milli(text)
        default: return nil
        }
    }

    public static func milli(_ text: String) -> Int64? {
        var number = Substring(text)
        var (binary, decimal) = (0, 0)
        if let e = number.firstIndex(where: { $0 == "e" || $0 == "E" }), number.index(after: e) < number.endIndex,
           let exponent = Int(number[number.index(after: e)...]) {
            decimal = exponent
            number = number[..<e]
        } else {
            for (suffix, two, ten) in suffixes where number.hasSuffix(suffix) {
                number = number.dropLast(suffix.count)
                (binary, decimal) = (two, ten)
                break
            }
        }
        let parts = number.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count <= 2, let whole = parts.first, !whole.isEmpty, whole.allSatisfy(\.isASCIIDigit),
              parts.count == 1 || (!parts[1].isEmpty && parts[1].allSatisfy(\.isASCIIDigit)) else { return nil }
        let fraction = parts.count == 2 ? parts[1] : ""
        guard let mantissa = Int64(String(whole.drop { $0 == "0" }) + fraction) ?? (whole.allSatisfy { $0 == "0" } && fraction.isEmpty ? 0 : nil)
        else { return .max }
        return scale(mantissa, binary: binary, decimal: decimal + 3 - fraction.count)
    }

    /// mantissa × 2^binary × 10^decimal, rounded up, saturating at Int64.max.
    static func scale(_ mantissa: Int64, binary: Int, decimal: Int) -> Int64 {
        var value = mantissa
        for _ in 0..<binary {
            let (r, o) = value.multipliedReportingOverflow(by: 2)
            if o { return .max }
            value = r
        }
        if decimal >= 0 {
            for _ in 0..<decimal {
                let (r, o) = value.multipliedReportingOverflow(by: 10)
                if o { return .max }
                value = r
            }
            return value
        }
        var divisor: Int64 = 1
        for _ in 0..<(-decimal) {
            let (r, o) = divisor.multipliedReportingOverflow(by: 10)
            if o { return value == 0 ? 0 : 1 }
            divisor = r
        }
        return value / divisor + (value % divisor == 0 ? 0 : 1)
    }
}

extension Character {
    var isASCIIDigit: Bool { ("0"..."9").contains(self) }
}
