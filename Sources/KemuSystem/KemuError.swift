/// kemu's project error: a stable code a caller can switch on, a message that names the operation
/// and the thing at fault, and the underlying cause when there is one.
public struct KemuError: Error, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        case notFound, exists, invalidArgument, invalidState, permissionDenied, timeout, system
    }

    public let code: Code
    public let message: String
    public let cause: (any Error)?

    public init(_ code: Code, _ message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String {
        guard let cause else { return message }
        return "\(message): \(cause)"
    }
}
