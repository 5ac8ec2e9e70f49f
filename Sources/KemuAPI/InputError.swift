/// Input the API cannot use, KemuAPI's one error: a body that is not JSON (with the byte offset
/// where reading stopped), a label or field selector that does not parse, a patch that cannot be
/// applied. The API server answers each as its Status: 400 for JSON and selectors, 422 for patches.
public struct InputError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: Sendable, Equatable { case json, selector, patch }

    public let kind: Kind
    public let message: String
    /// For `.json`: the byte offset where reading stopped.
    public let offset: Int?

    public static func json(offset: Int, _ reason: String) -> InputError { InputError(kind: .json, message: reason, offset: offset) }
    public static func selector(_ message: String) -> InputError { InputError(kind: .selector, message: message, offset: nil) }
    public static func patch(_ message: String) -> InputError { InputError(kind: .patch, message: message, offset: nil) }

    public var description: String {
        guard kind == .json else { return message }
        return "invalid JSON at byte \(offset ?? 0): \(message)"
    }
}
