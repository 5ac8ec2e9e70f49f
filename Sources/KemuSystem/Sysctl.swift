/// Kernel parameters under /proc/sys. Network ones (`net.*`) belong to the network namespace of the
/// thread that opens the file, so call these inside `NamespaceThread.run(in:)`.
public enum Sysctl {
    /// `sysctl -w key=value`
    public static func write(_ key: String, _ value: String) throws {
        let fd = try FileDescriptor(opening: path(key), flags: O_WRONLY)
        try fd.write(value + "\n")
    }

    /// `sysctl -n key` as a number; nil when missing or not a number.
    public static func readInt(_ key: String) -> Int? {
        guard let text = try? FileSystem.readFile(path(key)) else { return nil }
        return Int(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Whether the parameter exists (in the caller's namespace; the `net.bridge.*` ones exist in
    /// every namespace or none, as br_netfilter is loaded or not).
    public static func exists(_ key: String) -> Bool { access(path(key), F_OK) == 0 }

    static func path(_ key: String) -> String {
        "/proc/sys/" + key.replacingOccurrences(of: ".", with: "/")
    }
}

import Foundation
import Glibc
