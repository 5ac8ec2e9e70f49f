import Foundation
import KemuAPI

/// A list in pages (`?limit=N&continue=TOKEN`), as client-go's pager and `kubectl get` ask for
/// them. Items come in (namespace, name) order; the token names the last item sent and the revision
/// of the first page. Every page reports that first revision, so a client that watches from it
/// afterwards is replayed whatever changed while it paged (the store keeps no snapshots to serve
/// later pages from; upstream does, and a watch from the first revision makes up the difference).
struct ListPage {
    var limit: Int?
    /// The last item sent: namespace, name.
    var after: (String, String)?
    var revision: Int64?

    /// nil when the query asks for everything at once.
    init?(_ query: Query) throws {
        if let text = query["limit"] {
            guard let n = Int(text), n >= 0 else { throw APIError.badRequest("limit: \"\(text)\" is not a whole number") }
            limit = n > 0 ? n : nil  // upstream: 0 means no limit
        }
        if let token = query["continue"], !token.isEmpty {
            guard let (key, revision) = Self.decode(token) else {
                throw APIError.badRequest("continue: \"\(token)\" is not a continue token this server gave")
            }
            (after, self.revision) = (key, revision)
        }
        if limit == nil && after == nil { return nil }
    }

    static func encode(_ key: (String, String), _ revision: Int64) -> String {
        let body: JSON = ["v": "meta.k8s.io/v1", "rv": .int(revision), "namespace": .string(key.0), "name": .string(key.1)]
        return Data(body.bytes()).base64EncodedString()
    }

    static func decode(_ token: String) -> ((String, String), Int64)? {
        guard let data = Data(base64Encoded: token), let body = try? JSON.parse(Array(data)),
              let namespace = body["namespace"]?.string, let name = body["name"]?.string, let revision = body["rv"]?.int else { return nil }
        return ((namespace, name), revision)
    }
}
