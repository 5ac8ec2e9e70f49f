/// A problem in a cluster config, naming the field at fault: `network.podCIDR: …`.
public struct ConfigError: Error, CustomStringConvertible, Sendable, Equatable {
    public let field: String
    public let message: String

    public init(_ field: String, _ message: String) {
        self.field = field
        self.message = message
    }

    public var description: String { field.isEmpty ? message : "\(field): \(message)" }
}

/// Every problem found in one config, so the user can fix them in one go.
public struct ConfigErrors: Error, CustomStringConvertible, Sendable {
    public let source: String
    public let errors: [ConfigError]

    public init(source: String, errors: [ConfigError]) {
        self.source = source
        self.errors = errors
    }

    public var description: String {
        let lines = errors.map { "  \($0)" }.joined(separator: "\n")
        return "invalid cluster config \(source):\n\(lines)"
    }
}
