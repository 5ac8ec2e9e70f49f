/// Columns of text as kubectl prints them: each column as wide as its widest cell, the last one
/// unpadded, no trailing blanks.
public enum TextTable {
    public static func render(_ header: [String], _ rows: [[String]], separator: String = "   ") -> String {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0.indices.contains(column) ? $0[column].count : 0 }.max() ?? 0 }
        return all.map { row in
            var line = ""
            for (i, cell) in row.enumerated() where i < widths.count {
                line += i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) + separator
            }
            while line.last == " " { line.removeLast() }
            return line
        }.joined(separator: "\n") + "\n"
    }
}
