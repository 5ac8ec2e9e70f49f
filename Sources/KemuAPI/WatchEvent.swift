import Synchronization

/// One event on a watch stream, as the API sends it: `{"type":"ADDED","object":{…}}`.
public struct WatchEvent: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case added = "ADDED", modified = "MODIFIED", deleted = "DELETED", bookmark = "BOOKMARK"
    }

    public var type: Kind
    public var object: JSON
    /// Shared by every watcher that gets this change, so its bytes are made once, not once per
    /// watcher (a change of a 100-endpoint slice goes to every node's proxy). Not part of equality.
    public var encoding: EncodingCache?

    public init(_ type: Kind, _ object: JSON, encoding: EncodingCache? = nil) {
        self.type = type
        self.object = object
        self.encoding = encoding
    }

    public static func == (a: WatchEvent, b: WatchEvent) -> Bool { a.type == b.type && a.object == b.object }
}

/// One change's encodings, by the event type a watcher sees it as (a change can be ADDED for
/// one watcher's selector and MODIFIED for another's).
public final class EncodingCache: Sendable {
    private let encoded = Mutex<[String: [UInt8]]>([:])

    public init() {}

    public func bytes(_ key: String, _ make: () -> [UInt8]) -> [UInt8] {
        if let done = encoded.withLock({ $0[key] }) { return done }
        let made = make()
        encoded.withLock { $0[key] = made }
        return made
    }
}
