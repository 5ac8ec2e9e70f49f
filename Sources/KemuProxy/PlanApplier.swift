import KemuClient
import KemuIP
import KemuSystem
import Logging

/// Applies the difference between a Service's previous plan and its new one to a backend and to
/// the node's local addresses: addresses before the listeners that need them, listeners before
/// pools are dropped, addresses shared by several Services counted so the last one out removes
/// them. What could not be done (an address that cannot be bound) is reported, not hidden: the
/// caller keeps the Service for a retry, and the next apply tries again what is still missing.
struct PlanApplier {
    let backend: any ProxyBackend
    let addresses: any LocalAddresses
    /// Ranges made local as a whole (the service CIDR): their addresses are never added one by one.
    let localRanges: [IPv4Network]
    let logger: Logger
    /// What each listening address feeds.
    private(set) var listening: [FrontendAddress: Frontend] = [:]
    /// The Services that use each address on `lo`, and the addresses actually added there.
    private var addressUsers: [IPv4Address: Set<ServiceKey>] = [:]
    private var present: Set<IPv4Address> = []

    init(backend: any ProxyBackend, addresses: any LocalAddresses, localRanges: [IPv4Network], logger: Logger) {
        self.backend = backend
        self.addresses = addresses
        self.localRanges = localRanges
        self.logger = logger
    }

    /// Applies `old` → `new` for `key`; returns what failed (empty: all of it took effect).
    /// Addresses no Service uses any more are added to `released`, for the caller to remove
    /// from `lo` after the batch is committed.
    mutating func apply(_ key: ServiceKey, from old: ServicePlan, to new: ServicePlan, released: inout [IPv4Address]) -> [String] {
        var failures: [String] = []
        // Addresses first: a listener on an address not yet local would accept nothing.
        // One that could not be added before is tried again, also when the plan did not change.
        for ip in new.localAddresses.sorted() where !isInLocalRange(ip) {
            addressUsers[ip, default: []].insert(key)
            guard !present.contains(ip) else { continue }
            do {
                try addresses.add(ip)
                present.insert(ip)
            } catch {
                failures.append("adding \(ip) to lo: \(error)")
            }
        }
        for (name, pool) in new.pools where old.pools[name] != pool {
            backend.setPool(name, pool.settings, pool.endpoints)
        }
        // New addresses, moved ones, and ones that could not be bound before (tried again).
        for (address, frontend) in new.frontends.sorted(by: { $0.key < $1.key }) {
            let current = listening[address]
            if current == frontend { continue }
            if current != nil {
                backend.route(address, frontend)
                listening[address] = frontend
                continue
            }
            do {
                try backend.listen(address, frontend)
                listening[address] = frontend
            } catch {
                failures.append("cannot listen on \(address): \(error)")
            }
        }
        for address in old.frontends.keys.sorted() where new.frontends[address] == nil && listening[address] != nil {
            backend.unlisten(address)
            listening[address] = nil
        }
        for name in old.pools.keys where new.pools[name] == nil { backend.removePool(name) }
        for ip in old.localAddresses.subtracting(new.localAddresses) where !isInLocalRange(ip) {
            addressUsers[ip]?.remove(key)
            guard addressUsers[ip]?.isEmpty ?? true else { continue }
            addressUsers[ip] = nil
            if present.remove(ip) != nil { released.append(ip) }
        }
        return failures
    }

    func isInLocalRange(_ ip: IPv4Address) -> Bool { localRanges.contains { $0.contains(ip) } }

    /// Addresses some Service wants on `lo` (the rest in the managed ranges are a previous
    /// proxy's leftovers).
    var wantedAddresses: Set<IPv4Address> { Set(addressUsers.keys) }
}
