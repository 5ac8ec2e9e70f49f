import KemuAPI
import KemuClient
import KemuIP
import Synchronization

/// Bandwidth Faults on this node: the local endpoints of each Service with one, at its rate,
/// handed to the `PodShaper` whenever that set changes (and at the first sync, so a restarted
/// proxy clears what its predecessor left).
final class BandwidthShaping: Sendable {
    let shaper: any PodShaper
    let nodeName: String
    /// The limits last given to the shaper (nil: never yet).
    private let shaped = Mutex<[IPv4Address: UInt64]?>(nil)

    init(shaper: any PodShaper, nodeName: String) {
        self.shaper = shaper
        self.nodeName = nodeName
    }

    /// The limits the Faults ask for on this node's endpoint pods.
    static func wanted(faults: some Sequence<Fault>, slices: (ServiceKey) -> [SliceInfo], node: String) -> [IPv4Address: UInt64] {
        var wanted: [IPv4Address: UInt64] = [:]
        for fault in faults {
            guard let rate = fault.bytesPerSecond else { continue }
            for slice in slices(ServiceKey(namespace: fault.namespace, name: fault.service)) {
                for e in slice.endpoints where e.nodeName == node {
                    if let ip = e.address { wanted[ip] = rate }
                }
            }
        }
        return wanted
    }

    func apply(_ wanted: [IPv4Address: UInt64]) {
        // Unchanged and empty: nothing to do. Otherwise the shaper looks again (a pod recreated
        // on the same address has a new, unshaped veth).
        let due = shaped.withLock { s -> Bool in
            if s == wanted && wanted.isEmpty { return false }
            s = wanted
            return true
        }
        if due { shaper.shape(wanted) }
    }
}
