import KemuIP
import KemuNetwork
import KemuProxy
import Logging
import Synchronization

/// Bandwidth Faults on one node's pods: tbf on both ends of each pod's veth (ClusterNetwork.shapePod).
/// Remembers what it set per veth, so a pod is touched only when its limit changes; the first call
/// clears every pod of the node, whatever an earlier proxy left.
public final class PodLinkShaper: PodShaper {
    let network: ClusterNetwork
    let node: String
    private let applied = Mutex<[String: UInt64]?>(nil)
    private let logger = Logger(label: "kemu.proxy.bandwidth")

    public init(network: ClusterNetwork, node: String) {
        self.network = network
        self.node = node
    }

    public func shape(_ wanted: [IPv4Address: UInt64]) {
        let pods = (try? network.pods().filter { $0.node == node }) ?? []
        applied.withLock { applied in
            var now: [String: UInt64] = [:]
            for pod in pods {
                let rate = wanted[pod.ip]
                if let rate { now[pod.hostVeth] = rate }
                if let before = applied, before[pod.hostVeth] == rate { continue }
                do {
                    try network.shapePod(pod, bytesPerSecond: rate)
                    if let rate { logger.info("pod \(pod.name) (\(pod.ip)): link limited to \(rate) bytes/s") }
                } catch {
                    logger.warning("pod \(pod.name): bandwidth limit \(rate.map(String.init) ?? "removal"): \(error)")
                }
            }
            applied = now
        }
    }
}
