/// Kernel parameters under /proc/sys. Network ones (`net.*`) belong to the network namespace of the
/// thread that opens the file, so call these inside `NamespaceThread.run(in:)`.
public enum Sysctl {
    /// `sysctl -w key=value`
    public static func write(_ key: String, _ value: String) throws {
        let fd = try FileDescriptor(opening: path(key), flags: O_WRONLY)
        try fd.write(value + "\n")
    }


    static func path(_ key: String) -> String {
        "/proc/sys/" + key.replacingOccurrences(of: ".", with: "/")
    }
}

import Foundation
import Glibc
