import Foundation
import Glibc

/// The few file operations kemu does on hot paths, straight to the kernel.
public enum FileSystem {
    /// mkdir; an existing directory is fine.
    public static func makeDirectory(_ path: String, mode: mode_t = 0o755) throws {
        if mkdir(path, mode) != 0 && errno != EEXIST { throw SystemError("mkdir", path, errno: errno) }
    }

    /// mkdir -p
    public static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws {
        var current = path.hasPrefix("/") ? "" : "."  // a relative path stays relative
        for part in path.split(separator: "/") {
            current += "/" + part
            try makeDirectory(current, mode: mode)
        }
    }

    /// Writes `contents` to a temporary file beside `path`, then renames it into place, so a reader
    /// never sees half a file.
    public static func writeFile(_ path: String, _ contents: String, mode: mode_t = 0o644) throws {
        let temporary = "\(path).tmp-\(getpid())"
        let fd = try FileDescriptor(opening: temporary, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: mode)
        do {
            try fd.write(contents)
            try syscall("rename", "\(temporary) → \(path)") { rename(temporary, path) }
        } catch {
            unlink(temporary)
            throw error
        }
    }

    /// Creates `path` only if it does not exist yet; returns false if it did. An atomic claim.
    public static func createExclusive(_ path: String, _ contents: String) throws -> Bool {
        let fd: FileDescriptor
        do {
            fd = try FileDescriptor(opening: path, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o644)
        } catch let error as SystemError where error.errno == EEXIST {
            return false
        }
        try fd.write(contents)
        return true
    }

    public static func readFile(_ path: String) throws -> String {
        String(decoding: try FileDescriptor(opening: path).readAll(), as: UTF8.self)
    }

    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// ln -s TARGET PATH
    public static func symlink(_ target: String, at path: String) throws {
        if Glibc.symlink(target, path) != 0 { throw SystemError("symlink", "\(path) → \(target)", errno: errno) }
    }

    /// rm -f
    public static func removeFile(_ path: String) throws {
        if unlink(path) != 0 && errno != ENOENT { throw SystemError("unlink", path, errno: errno) }
    }

    /// rm -rf
    public static func removeTree(_ path: String) throws {
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        if st.st_mode & S_IFMT == S_IFDIR {
            guard let dir = opendir(path) else { throw SystemError("opendir", path, errno: errno) }
            var names: [String] = []
            while let entry = readdir(dir) {
                let name = withUnsafePointer(to: entry.pointee.d_name) { String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self)) }
                if name != "." && name != ".." { names.append(name) }
            }
            closedir(dir)
            for name in names { try removeTree("\(path)/\(name)") }
            if rmdir(path) != 0 && errno != ENOENT { throw SystemError("rmdir", path, errno: errno) }
        } else {
            try removeFile(path)
        }
    }

    /// Names in a directory; none if it does not exist.
    public static func list(_ path: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
    }
}
