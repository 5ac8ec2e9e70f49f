/// A value written as text in JSON and YAML ("10.244.0.0/16", "30000-32767"): encoded as its
/// description, decoded through its failable text initializer.
public protocol TextCodable: Codable, CustomStringConvertible {
    init?(_ text: String)
    /// What the text should look like, for the decoding error.
    static var expectedText: String { get }
}

extension TextCodable {
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let value = Self(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                    debugDescription: "\(text) is not \(Self.expectedText)"))
        }
        self = value
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
