import Foundation
import Glibc
import KemuSystem

/// Where this kemu binary and its project files are.
public enum Executable {
    /// The running binary, absolute (from /proc/self/exe).
    public static let path: String = {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        return n > 0 ? String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
    }()

    /// configs/images.yaml in the working directory, else in the project the binary was built in
    /// (the nearest directory above the binary that has one).
    public static func imageCatalog() -> String {
        let local = FileManager.default.currentDirectoryPath + "/configs/images.yaml"
        if FileSystem.exists(local) { return local }
        var directory = URL(fileURLWithPath: path).deletingLastPathComponent()
        for _ in 0..<6 {
            let candidate = directory.appendingPathComponent("configs/images.yaml").path
            if FileSystem.exists(candidate) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        return local
    }
}

/// Commands that create or enter network namespaces refuse early, before touching anything.
public func requireRoot(_ what: String) throws {
    guard geteuid() == 0 else {
        throw KemuError(.permissionDenied, "\(what) needs root: it creates and enters network namespaces (try: sudo kemu …)")
    }
}
