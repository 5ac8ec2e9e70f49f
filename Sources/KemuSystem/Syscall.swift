import Glibc

/// An errno from a system call, with the operation and the object it was applied to:
/// `mount --bind /proc/thread-self/ns/net /run/netns/kemu-a-fabric: Operation not permitted`.
public struct SystemError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let object: String
    public let errno: Int32

    public init(_ operation: String, _ object: String, errno: Int32) {
        self.operation = operation
        self.object = object
        self.errno = errno
    }

    public var description: String {
        let reason = String(cString: strerror(errno))
        return object.isEmpty ? "\(operation): \(reason)" : "\(operation) \(object): \(reason)"
    }
}

/// Runs a system call that returns -1 and sets errno on failure; retries on EINTR and throws
/// `SystemError` otherwise.
@discardableResult
@inline(__always)
public func syscall<T: FixedWidthInteger>(
    _ operation: String, _ object: String = "", _ body: () -> T
) throws -> T {
    while true {
        let result = body()
        if result != -1 { return result }
        let err = Glibc.errno
        if err == EINTR { continue }
        throw SystemError(operation, object, errno: err)
    }
}

/// Checks a call that returns 0 or an errno value (pthread style, and kemu's C shims).
@inline(__always)
public func check(_ operation: String, _ object: String = "", _ result: Int32) throws {
    if result != 0 { throw SystemError(operation, object, errno: result) }
}
