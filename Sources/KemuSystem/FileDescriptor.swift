import Glibc

/// An open file descriptor owned by this object: closed when the last reference goes.
public final class FileDescriptor: Sendable {
    public let raw: Int32
    /// What was opened, for error messages.
    public let path: String

    public init(adopting raw: Int32, path: String) {
        self.raw = raw
        self.path = path
    }

    /// open(2) with O_CLOEXEC added.
    public convenience init(opening path: String, flags: Int32 = O_RDONLY, mode: mode_t = 0o644) throws {
        let fd = try syscall("open", path) { open(path, flags | O_CLOEXEC, mode) }
        self.init(adopting: fd, path: path)
    }

    deinit { close(raw) }

    /// Writes all of `bytes`.
    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { buffer throws in
            var offset = 0
            while offset < buffer.count {
                offset += try syscall("write", path) { Glibc.write(raw, buffer.baseAddress! + offset, buffer.count - offset) }
            }
        }
    }

    public func write(_ string: String) throws { try write(Array(string.utf8)) }

    /// Reads to end of file.
    public func readAll() throws -> [UInt8] {
        var result: [UInt8] = []
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 8)
        defer { chunk.deallocate() }
        while true {
            let n = try syscall("read", path) { read(raw, chunk.baseAddress!, chunk.count) }
            if n == 0 { return result }
            result.append(contentsOf: chunk[0..<n])
        }
    }
}
