import KemuNetwork
import KemuSystem

/// The files of a running cluster under its state directory (/run/kemu/NAME): the API server's
/// data and kubeconfig, one pid file and one log per daemon, the node agents' kubeconfigs.
public struct ClusterFiles: Sendable {
    public let state: String
    public var dataDir: String { "\(state)/apiserver" }
    public var kubeconfig: String { "\(dataDir)/kubeconfig" }
    public func pidFile(_ daemon: String) -> String { "\(state)/\(daemon).pid" }
    public func log(_ daemon: String) -> String { "\(state)/\(daemon).log" }
    public func nodeKubeconfig(_ node: String) -> String { "\(state)/nodes/\(node).kubeconfig" }
    /// Every node's proxy is `system:kube-proxy`, bound to system:node-proxier (reads only).
    public var proxyKubeconfig: String { "\(state)/nodes/kube-proxy.kubeconfig" }
    /// Where a node's proxy explains each packet NetworkPolicy denied (`kemu logs --drops`).
    public func dropLog(node: String) -> String { "\(state)/drops-\(node).log" }
    public var dropLogs: [String] { FileSystem.list(state).filter { $0.hasPrefix("drops-") && $0.hasSuffix(".log") }.sorted().map { "\(state)/\($0)" } }
    /// Every daemon with a pid file.
    public var daemons: [String] { FileSystem.list(state).filter { $0.hasSuffix(".pid") }.map { String($0.dropLast(4)) } }

    public init(cluster: String) { state = ClusterNetwork.defaultStateDirectory(cluster) }
    /// A state directory elsewhere (tests).
    public init(state: String) { self.state = state }
}
