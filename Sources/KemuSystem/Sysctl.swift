/// Kernel parameters under /proc/sys. Network ones (`net.*`) belong to the network namespace of the
/// thread that opens the file, so call these inside `NamespaceThread.run(in:)`.
public enum Sysctl {
    /// `sysctl -w key=value`
    public static func write(_ key: String, _ value: String) throws {
        let fd = try FileDescriptor(opening: path(key), flags: O_WRONLY)
        try fd.write(value + "\n")
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
