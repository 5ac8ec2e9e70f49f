import KemuIP
import KemuSystem

extension ClusterNetwork {
    /// Adds one node to a running cluster. The new node gets the lowest free index; the only change
    /// to the other nodes and the control-plane host is one route each, to the new node's pods.
    public func addNode(_ name: String) throws {
        var candidate = config
        candidate.nodes.append(name)
        let errors = candidate.validate()
        if !errors.isEmpty { throw ConfigErrors(source: "node \(name)", errors: errors) }
        let used = Set(state.withLock { $0.nodeIndex.values })
        let index = (1...).first { !used.contains($0) }!
        guard plan.network.podCIDR.subnet(index, prefixLength: plan.network.nodePodPrefixLength) != nil,
              Int(plan.network.fabricCIDR.size) - 2 >= AddressPlan.firstNodeHost + index else {
            throw KemuError(.invalidState, "no room for node \(name): network.podCIDR or network.fabricCIDR is full")
        }
        let others = podRouteHosts
        var routed: [String] = []
        do {
            try buildNode(name, index: index)
            for other in others {
                try netlink(plan.namespace(other)).routeAdd(routeToPods(of: index))
                routed.append(other)
            }
        } catch {
            for other in routed { try? netlink(plan.namespace(other)).routeDelete(routeToPods(of: index)) }
            try? removeHost(name)
            throw error
        }
        state.withLock {
            $0.config.nodes.append(name)
            $0.nodeIndex[name] = index
        }
        try saveState()
    }

    /// Removes one node, the pod sandboxes on it, and the route to its pods from every other host.
    public func removeNode(_ name: String) throws {
        let index = try nodeIndex(name)
        // Its pods' processes too: the node's agent is gone, and nothing else would end them.
        for pod in try pods() where pod.node == name { try removePod(pod.name, killProcesses: true) }
        state.withLock {
            $0.config.nodes.removeAll { $0 == name }
            $0.nodeIndex[name] = nil
        }
        for other in podRouteHosts {
            try netlink(plan.namespace(other)).routeDelete(routeToPods(of: index))
        }
        try removeHost(name)
        try saveState()
    }

    /// Hosts that route to every node's pods: the nodes and the control-plane host.
    var podRouteHosts: [String] { nodes.map(\.name) + ["cp"] }

    /// Deletes a host's fabric port (its veth peer goes with it at once, rather than whenever the
    /// kernel frees the namespace) and then its namespace.
    // ip -n kemu-C-fabric link del HOST; ip netns del kemu-C-HOST
    func removeHost(_ host: String) throws {
        let namespace = plan.namespace(host)
        do {
            try netlink(plan.fabricNamespace).linkDelete(host)
        } catch let error as KemuError where error.code == .notFound {}
        forget(namespace)
        try backend.deleteNamespace(namespace)
    }
}
