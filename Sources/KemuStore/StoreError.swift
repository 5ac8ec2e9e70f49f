import KemuAPI

/// Why a store operation failed; the API server turns each into a Kubernetes Status.
public enum StoreError: Error, Equatable, Sendable, CustomStringConvertible {
    /// 404: `pods "web" not found`
    case notFound(resource: String, name: String)
    /// 409 AlreadyExists
    case alreadyExists(resource: String, name: String)
    /// 409 Conflict: the object changed since the revision the writer read.
    case conflict(resource: String, name: String)
    /// 409: a change made on an owner's behalf (an adoption) found the owner gone or being deleted.
    case ownerGone(resource: String, name: String)
    /// 410: a watch asked for history the store no longer keeps.
    case expired(requested: Int64, oldest: Int64)
    /// 422/400: what the store itself refuses (no name, wrong namespace, …).
    case invalid(String)

    public var description: String {
        switch self {
        case .notFound(let r, let n): "\(r) \"\(n)\" not found"
        case .alreadyExists(let r, let n): "\(r) \"\(n)\" already exists"
        case .conflict(let r, let n): "Operation cannot be fulfilled on \(r) \"\(n)\": the object has been modified; please apply your changes to the latest version and try again"
        case .ownerGone(let r, let n): "\(r) \"\(n)\" is gone or being deleted: it may not adopt"
        case .expired(let requested, let oldest): "too old resource version: \(requested) (\(oldest))"
        case .invalid(let message): message
        }
    }
}
