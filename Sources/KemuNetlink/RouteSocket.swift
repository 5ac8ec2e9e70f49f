import CNetlink
import Glibc
import KemuIP
import KemuSystem
import Synchronization

/// A libnl route socket bound to one network namespace: the kernel side of `Netlink`.
///
/// The socket is opened inside its namespace on the `NamespaceThread` and stays there for its whole
/// life, so it can then be used from any thread. libnl sockets are not thread-safe: every request
/// holds `lock`, making this object the single owner of the socket.
public final class RouteSocket: Netlink, @unchecked Sendable {
    let sock: OpaquePointer
    let lock = Mutex(())
    /// name → ifindex, filled by lookups and used under `lock`. Names can be reused for new links,
    /// so a request that fails with "no such device" after using it is retried once without it.
    nonisolated(unsafe) var indexes: [String: Int32] = [:]
    public let namespaceName: String

    /// Opens a route socket inside `namespace` (or the caller's own namespace for nil).
    public static func open(in namespace: NetworkNamespace?, thread: NamespaceThread = .shared) throws -> RouteSocket {
        guard let namespace else { return try RouteSocket(namespaceName: "") }
        let fd = try namespace.open()
        return try thread.run(in: fd) { try RouteSocket(namespaceName: namespace.name) }
    }

    /// A socket in the calling thread's namespace, labelled `name`: for use inside
    /// `NamespaceThread.run(in:)` or `NetworkNamespace.create(_:inside:)`.
    public static func inCurrentNamespace(name: String) throws -> RouteSocket {
        try RouteSocket(namespaceName: name)
    }

    private init(namespaceName: String) throws {
        guard let sock = nl_socket_alloc() else {
            throw KemuError(.system, "netlink socket for \(namespaceName): out of memory")
        }
        let err = nl_connect(sock, NETLINK_ROUTE)
        if err < 0 {
            nl_socket_free(sock)
            throw NetlinkError("netlink connect", namespace: namespaceName, libnlError: err)
        }
        self.sock = sock
        self.namespaceName = namespaceName
    }

    deinit { nl_socket_free(sock) }

    /// Runs one request under the socket lock; a negative libnl result becomes a `NetlinkError`
    /// naming `operation` (the `ip` command).
    func request(_ operation: @autoclosure () -> String, _ body: () throws -> Int32) throws {
        let err = try lock.withLock { _ in
            let usedCache = !indexes.isEmpty
            let first = try body()
            guard first == -NLE_NODEV || first == -NLE_OBJ_NOTFOUND, usedCache else { return first }
            indexes.removeAll()
            return try body()
        }
        if err < 0 { throw NetlinkError(operation(), namespace: namespaceName, libnlError: err).kemuError }
    }

    /// ifindex of a link by name; call with the lock held.
    func index(of name: String) throws -> Int32 {
        if let index = indexes[name] { return index }
        var link: OpaquePointer?
        let err = rtnl_link_get_kernel(sock, 0, name, &link)
        if err < 0 {
            throw NetlinkError("ip link show \(name)", namespace: namespaceName, libnlError: err).kemuError
        }
        defer { rtnl_link_put(link) }
        let index = rtnl_link_get_ifindex(link)
        indexes[name] = index
        return index
    }
}

/// An `nl_addr` for an IPv4 address with a prefix length; the caller puts it.
func makeAddress(_ address: IPv4Address, prefixLength: Int) -> OpaquePointer {
    var bytes = address.octets
    let addr = nl_addr_build(AF_INET, &bytes, 4)!
    nl_addr_set_prefixlen(addr, Int32(prefixLength))
    return addr
}

/// The IPv4 address in an `nl_addr`; 0.0.0.0 for an empty one (libnl's "default").
func readAddress(_ addr: OpaquePointer?) -> IPv4Address {
    guard let addr, nl_addr_get_len(addr) == 4, let raw = nl_addr_get_binary_addr(addr) else { return IPv4Address(0) }
    let b = raw.assumingMemoryBound(to: UInt8.self)
    return IPv4Address(b[0], b[1], b[2], b[3])
}
