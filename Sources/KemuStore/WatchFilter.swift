import KemuAPI

/// What a watch selects: one resource, optionally one namespace, labels and fields.
public struct WatchFilter: Sendable {
    public var resource: String
    /// nil: every namespace.
    public var namespace: String?
    public var labels: LabelSelector
    public var fields: FieldSelector

    public init(_ resource: String, namespace: String? = nil, labels: LabelSelector = .everything, fields: FieldSelector = .everything) {
        self.resource = resource
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
    }

    public func matches(_ object: JSON) -> Bool {
        (namespace == nil || object.namespace == namespace) && labels.matches(object.labels) && fields.matches(object)
    }

    /// The event a watcher sees for a change from `old` to `new` (either may be nil): an update that
    /// moves an object into the selection is ADDED, one that moves it out is DELETED.
    func event(old: JSON?, new: JSON?, deletedAs deleted: JSON?) -> WatchEvent? {
        let was = old.map(matches) ?? false
        let now = new.map(matches) ?? false
        switch (was, now) {
        case (false, true): return WatchEvent(.added, new!)
        case (true, true): return WatchEvent(.modified, new!)
        case (true, false): return WatchEvent(.deleted, deleted ?? new!)
        case (false, false): return nil
        }
    }
}
