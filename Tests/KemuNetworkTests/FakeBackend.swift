import Glibc
import KemuIP
import KemuNetlink
import KemuNetwork
import KemuSystem
import Synchronization

/// An in-memory machine behind the `NetworkBackend` seam. It keeps the kernel's rules that the
/// topology logic depends on: veth ends vanish together, a gateway must be reachable, a link must
/// exist to carry an address, and the kernel adds a subnet route for every address on an up link.
/// `failOnOperation` makes the n-th change fail, to test that half-built things are removed.
final class FakeBackend: NetworkBackend, @unchecked Sendable {
    struct Namespace: Equatable {
        var links: [String: LinkInfo] = ["lo": LinkInfo(name: "lo", kind: "", up: false, mtu: 65536)]
        var addresses: Set<AddressInfo> = []
        var routes: Set<Route> = []
        var sysctls: [String: String] = [:]
        var etc: [String: String] = [:]
    }

    struct Machine: Equatable {
        var namespaces: [String: Namespace] = [:]
        /// veth ends: (namespace, link) ↔ (namespace, link)
        var peers: [String: String] = [:]
    }

    let machine = Mutex(Machine())
    let operations = Mutex(0)
    var failOnOperation: Int?

    var state: Machine { machine.withLock { $0 } }

    func step(_ what: String) throws {
        let n = operations.withLock { $0 += 1; return $0 }
        if n == failOnOperation { throw KemuError(.system, "injected failure at operation \(n): \(what)") }
    }

    func createNamespace(_ name: String) throws -> any Netlink {
        try step("netns add \(name)")
        try machine.withLock { m in
            if m.namespaces[name] != nil { throw KemuError(.exists, "network namespace \(name) already exists") }
            m.namespaces[name] = Namespace()
        }
        return FakeNetlink(backend: self, namespaceName: name)
    }

    func deleteNamespace(_ name: String) throws {
        machine.withLock { m in
            guard let ns = m.namespaces.removeValue(forKey: name) else { return }
            for link in ns.links.keys { Self.dropPeer(of: "\(name)/\(link)", in: &m) }
        }
    }

    static func dropPeer(of key: String, in m: inout Machine) {
        guard let peer = m.peers.removeValue(forKey: key) else { return }
        m.peers[peer] = nil
        let parts = peer.split(separator: "/", maxSplits: 1).map(String.init)
        guard var ns = m.namespaces[parts[0]] else { return }
        ns.links[parts[1]] = nil
        ns.addresses = ns.addresses.filter { $0.device != parts[1] }
        ns.routes = ns.routes.filter { $0.device != parts[1] }
        m.namespaces[parts[0]] = ns
    }

    func namespaceNames() -> [String] { machine.withLock { $0.namespaces.keys.sorted() } }

    func netlink(_ namespace: String) throws -> any Netlink {
        guard machine.withLock({ $0.namespaces[namespace] != nil }) else {
            throw KemuError(.notFound, "network namespace \(namespace) does not exist")
        }
        return FakeNetlink(backend: self, namespaceName: namespace)
    }

    func setSysctl(_ namespace: String, _ key: String, _ value: String) throws {
        try step("sysctl \(key)")
        machine.withLock { $0.namespaces[namespace]?.sysctls[key] = value }
    }

    /// As on a machine where br_netfilter is loaded (Docker, a kubelet).
    func hasSysctl(_ key: String) -> Bool { true }

    /// Machine-wide sysctls, starting from the kernel's defaults, and what `raiseHostLimits` saved.
    let host = Mutex((values: ["net.ipv4.neigh.default.gc_thresh1": 128, "net.ipv4.neigh.default.gc_thresh2": 512,
                               "net.ipv4.neigh.default.gc_thresh3": 1024], saved: [String: Int]()))

    func raiseHostLimits(_ limits: [(key: String, atLeast: Int)]) throws {
        try step("raise host limits")
        host.withLock { h in
            for (key, target) in limits {
                guard let current = h.values[key], current < target else { continue }
                if h.saved[key] == nil { h.saved[key] = current }
                h.values[key] = target
            }
        }
    }

    func restoreHostLimits(unless inUse: () -> Bool) throws {
        if inUse() { return }
        host.withLock { h in
            h.values.merge(h.saved) { $1 }
            h.saved = [:]
        }
    }

    func writeEtcFile(_ namespace: String, _ file: String, _ contents: String) throws {
        try step("write /etc/netns/\(namespace)/\(file)")
        machine.withLock { $0.namespaces[namespace]?.etc[file] = contents }
    }

    func etcNamespaceNames() -> [String] { [] }
    func processes(in namespace: String) -> [pid_t] { [] }
    func kill(_ pid: pid_t) throws {}

    /// What `ip link; ip addr; ip route` would show in `namespace`.
    func snapshot(_ namespace: String) -> NamespaceSnapshot? {
        machine.withLock { m in
            guard let ns = m.namespaces[namespace] else { return nil }
            var routes = ns.routes
            for a in ns.addresses where ns.links[a.device]?.up == true {
                routes.insert(Route(a.address.network, device: a.device, proto: .kernel))
            }
            return NamespaceSnapshot(links: Array(ns.links.values), addresses: Array(ns.addresses), routes: Array(routes))
        }
    }
}

final class FakeNetlink: Netlink, @unchecked Sendable {
    let backend: FakeBackend
    let namespaceName: String

    init(backend: FakeBackend, namespaceName: String) {
        self.backend = backend
        self.namespaceName = namespaceName
    }

    private func edit<T>(_ what: String, _ body: (inout FakeBackend.Machine, inout FakeBackend.Namespace) throws -> T) throws -> T {
        try backend.step(what)
        return try backend.machine.withLock { m in
            guard var ns = m.namespaces[namespaceName] else { throw KemuError(.notFound, "\(what): no namespace \(namespaceName)") }
            let result = try body(&m, &ns)
            if m.namespaces[namespaceName] != nil { m.namespaces[namespaceName] = ns }
            return result
        }
    }

    private func need(_ ns: FakeBackend.Namespace, _ link: String, _ what: String) throws {
        if ns.links[link] == nil { throw KemuError(.notFound, "\(what): no link \(link) in \(namespaceName)") }
    }

    private func add(_ link: LinkInfo, to ns: inout FakeBackend.Namespace, _ what: String) throws {
        if ns.links[link.name] != nil { throw KemuError(.exists, "\(what): link \(link.name) exists in \(namespaceName)") }
        if let master = link.master { try need(ns, master, what) }
        ns.links[link.name] = link
    }

    func linkAddVeth(_ name: String, peer: String, peerNamespace: NetworkNamespace?, master: String?, up: Bool) throws {
        try edit("veth add \(name)") { m, ns in
            let peerNS = peerNamespace?.name ?? namespaceName
            guard m.namespaces[peerNS] != nil else { throw KemuError(.notFound, "no namespace \(peerNS)") }
            if m.namespaces[peerNS]!.links[peer] != nil { throw KemuError(.exists, "link \(peer) exists in \(peerNS)") }
            try add(LinkInfo(name: name, kind: "veth", master: master, up: up), to: &ns, "veth add")
            m.namespaces[peerNS]!.links[peer] = LinkInfo(name: peer, kind: "veth", up: false)
            if peerNS == namespaceName { ns.links[peer] = LinkInfo(name: peer, kind: "veth", up: false) }
            m.peers["\(namespaceName)/\(name)"] = "\(peerNS)/\(peer)"
            m.peers["\(peerNS)/\(peer)"] = "\(namespaceName)/\(name)"
        }
    }

    func linkAddBridge(_ name: String, up: Bool) throws {
        try edit("bridge add \(name)") { _, ns in try add(LinkInfo(name: name, kind: "bridge", up: up), to: &ns, "bridge add") }
    }

    func linkAddVxlan(_ name: String, vni: UInt32, local: IPv4Address?, remote: IPv4Address?, port: UInt16, device: String?) throws {
        try edit("vxlan add \(name)") { _, ns in try add(LinkInfo(name: name, kind: "vxlan", up: false), to: &ns, "vxlan add") }
    }

    func linkSetUp(_ name: String, _ up: Bool) throws {
        try edit("link set \(name) up") { _, ns in try need(ns, name, "link set"); ns.links[name]!.up = up }
    }

    func linkSetMaster(_ name: String, _ master: String?) throws {
        try edit("link set \(name) master") { _, ns in
            try need(ns, name, "link set")
            if let master { try need(ns, master, "link set master") }
            ns.links[name]!.master = master
        }
    }

    func linkSetName(_ name: String, _ newName: String) throws {
        try edit("link set \(name) name") { _, ns in
            try need(ns, name, "link set name")
            var link = ns.links.removeValue(forKey: name)!
            link.name = newName
            ns.links[newName] = link
        }
    }

    func linkSetMTU(_ name: String, _ mtu: UInt32) throws {
        try edit("link set \(name) mtu") { _, ns in try need(ns, name, "link set mtu"); ns.links[name]!.mtu = mtu }
    }

    func linkSetAddress(_ name: String, _ mac: [UInt8]) throws {
        try edit("link set \(name) address") { _, ns in try need(ns, name, "link set address") }
    }

    func linkDelete(_ name: String) throws {
        try edit("link del \(name)") { m, ns in
            try need(ns, name, "link del")
            ns.links[name] = nil
            ns.addresses = ns.addresses.filter { $0.device != name }
            ns.routes = ns.routes.filter { $0.device != name }
            m.namespaces[namespaceName] = ns
            FakeBackend.dropPeer(of: "\(namespaceName)/\(name)", in: &m)
            ns = m.namespaces[namespaceName]!
        }
    }

    func addressAdd(_ address: IPv4Interface, device: String) throws {
        try edit("addr add \(address)") { _, ns in
            try need(ns, device, "addr add")
            guard ns.addresses.insert(AddressInfo(device: device, address: address)).inserted else {
                throw KemuError(.exists, "addr \(address) exists on \(device)")
            }
        }
    }

    func addressDelete(_ address: IPv4Interface, device: String) throws {
        try edit("addr del \(address)") { _, ns in
            guard ns.addresses.remove(AddressInfo(device: device, address: address)) != nil else {
                throw KemuError(.notFound, "addr \(address) not on \(device)")
            }
        }
    }

    func routeAdd(_ route: Route) throws {
        try edit("route add \(route)") { _, ns in
            if let device = route.device { try need(ns, device, "route add") }
            if let gateway = route.gateway, !route.onLink {
                // The kernel wants the gateway inside a subnet of an up link, or reached by a link
                // route of its own (ENETUNREACH otherwise).
                let reachable = ns.addresses.contains { a in
                    a.address.network.contains(gateway) && ns.links[a.device]?.up == true
                        && (route.device == nil || route.device == a.device)
                } || ns.routes.contains { r in
                    r.gateway == nil && r.destination.contains(gateway) && r.device.map { ns.links[$0]?.up == true } == true
                        && (route.device == nil || route.device == r.device)
                }
                if !reachable { throw KemuError(.invalidArgument, "route add \(route): gateway unreachable") }
            }
            guard !ns.routes.contains(where: { $0.destination == route.destination }) else {
                throw KemuError(.exists, "route \(route.destination) exists")
            }
            ns.routes.insert(route)
        }
    }

    func routeDelete(_ route: Route) throws {
        try edit("route del \(route)") { _, ns in
            guard let existing = ns.routes.first(where: { $0.destination == route.destination }) else {
                throw KemuError(.notFound, "route \(route.destination) not found")
            }
            ns.routes.remove(existing)
        }
    }

    func qdiscReplaceTbf(device: String, bytesPerSecond: UInt64, burstBytes: UInt32, latencyMicroseconds: UInt32) throws {}
    func qdiscDeleteRoot(device: String) throws {}

    func snapshot() throws -> NamespaceSnapshot {
        guard let snapshot = backend.snapshot(namespaceName) else { throw KemuError(.notFound, "no namespace \(namespaceName)") }
        return snapshot
    }
}
