import KemuAPI

/// A Service's identity: its namespace and name.
public struct ServiceKey: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var namespace: String
    public var name: String

    public init(namespace: String, name: String) {
        self.namespace = namespace
        self.name = name
    }

    public var description: String { "\(namespace)/\(name)" }
    public static func < (a: ServiceKey, b: ServiceKey) -> Bool { (a.namespace, a.name) < (b.namespace, b.name) }
}

/// Services and their EndpointSlices as a node component keeps them, fed by the two informers'
/// events: each object in the compact form its reader needs (the proxy's `ServiceInfo`, the DNS's
/// `ServiceNames`), made once as it comes, and each slice filed under the Service its
/// `kubernetes.io/service-name` label names. The bookkeeping every reader needs is here once: a
/// slice relabelled to another Service leaves the one it was with, and a delete that comes as a
/// stub without labels (after a re-list, from a revisions-only informer) still finds its Service.
public struct ServiceSliceIndex<ServiceValue: Sendable, SliceValue: Sendable>: Sendable {
    public private(set) var services: [ServiceKey: ServiceValue] = [:]
    public private(set) var slices: [ServiceKey: [String: SliceValue]] = [:]
    /// The Service each slice (by its own namespace and name) is filed under.
    private var sliceOwners: [ServiceKey: ServiceKey] = [:]
    private let service: @Sendable (JSON) -> ServiceValue
    private let slice: @Sendable (JSON) -> SliceValue

    public init(service: @escaping @Sendable (JSON) -> ServiceValue, slice: @escaping @Sendable (JSON) -> SliceValue) {
        self.service = service
        self.slice = slice
    }

    /// The label that ties an EndpointSlice to its Service.
    public static var serviceNameLabel: String { "kubernetes.io/service-name" }

    /// The Service a slice object names, if any.
    public static func owner(of slice: JSON) -> ServiceKey? {
        slice.labels[serviceNameLabel].map { ServiceKey(namespace: slice.namespace, name: $0) }
    }

    /// The Service a filed slice (by its own namespace and name) is filed under.
    public func owner(ofSlice slice: ServiceKey) -> ServiceKey? { sliceOwners[slice] }

    /// A Service's slices, in name order.
    public func slices(of key: ServiceKey) -> [SliceValue] {
        (slices[key] ?? [:]).sorted { $0.key < $1.key }.map(\.value)
    }

    /// Applies a Service event; returns the Service whose inputs changed (none for `.synced`).
    @discardableResult
    public mutating func apply(service event: InformerEvent) -> [ServiceKey] {
        switch event {
        case let .added(o), let .updated(_, o):
            let key = ServiceKey(namespace: o.namespace, name: o.name)
            services[key] = service(o)
            return [key]
        case let .deleted(o):
            let key = ServiceKey(namespace: o.namespace, name: o.name)
            services[key] = nil
            return [key]
        case .synced:
            return []
        }
    }

    /// Applies an EndpointSlice event; returns the Services whose slices changed: the slice's
    /// Service, and the one it left if it was relabelled.
    @discardableResult
    public mutating func apply(slice event: InformerEvent) -> [ServiceKey] {
        switch event {
        case let .added(o), let .updated(_, o):
            let own = ServiceKey(namespace: o.namespace, name: o.name)
            let owner = Self.owner(of: o)
            var changed: [ServiceKey] = []
            if let before = sliceOwners[own], before != owner {
                removeSlice(o.name, of: before)
                changed.append(before)
            }
            guard let owner else {
                sliceOwners[own] = nil
                return changed
            }
            sliceOwners[own] = owner
            slices[owner, default: [:]][o.name] = slice(o)
            return changed + [owner]
        case let .deleted(o):
            guard let owner = sliceOwners.removeValue(forKey: ServiceKey(namespace: o.namespace, name: o.name)) ?? Self.owner(of: o) else { return [] }
            removeSlice(o.name, of: owner)
            return [owner]
        case .synced:
            return []
        }
    }

    private mutating func removeSlice(_ name: String, of key: ServiceKey) {
        slices[key]?[name] = nil
        if slices[key]?.isEmpty == true { slices[key] = nil }
    }

    /// How many slices are filed (for tests and metrics).
    public var sliceCount: Int { sliceOwners.count }
}
