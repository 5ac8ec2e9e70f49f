/// One event on a watch stream, as the API sends it: `{"type":"ADDED","object":{…}}`.
public struct WatchEvent: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case added = "ADDED", modified = "MODIFIED", deleted = "DELETED", bookmark = "BOOKMARK"
    }

    public var type: Kind
    public var object: JSON

    public init(_ type: Kind, _ object: JSON) {
        self.type = type
        self.object = object
    }
}
