import CNetlink
import KemuSystem

/// A failed netlink request: the `ip` command it stood for, the namespace, and libnl's reason.
public struct NetlinkError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let namespaceName: String
    /// libnl's NLE_* code (positive).
    public let code: Int32
    public let reason: String

    init(_ operation: String, namespace: String, libnlError: Int32) {
        self.operation = operation
        self.namespaceName = namespace
        self.code = abs(libnlError)
        self.reason = String(cString: nl_geterror(libnlError))
    }

    public var description: String {
        namespaceName.isEmpty ? "\(operation): \(reason)" : "\(operation) (in \(namespaceName)): \(reason)"
    }

    /// The object already exists (EEXIST).
    public var isExists: Bool { code == NLE_EXIST }
    /// The link, address or route is not there.
    public var isNotFound: Bool { code == NLE_OBJ_NOTFOUND || code == NLE_NODEV }

    /// The project error for this failure, with the stable code a caller can switch on.
    public var kemuError: KemuError {
        KemuError(isExists ? .exists : isNotFound ? .notFound : .system, description)
    }
}
