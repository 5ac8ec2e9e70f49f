import Foundation
import KemuIP
import KemuNetlink
import KemuSystem

extension ClusterNetwork {
    /// Creates a pod sandbox on `node`: a namespace with lo up, a veth whose `eth0` end is in the pod
    /// and whose other end is a port of the node's cbr0, the next free address of the node's pod
    /// subnet, a default route via the node, /etc/netns/<ns>/resolv.conf for cluster DNS and
    /// /etc/netns/<ns>/hosts naming the pod (`hostname`, by default the sandbox name) at its IP.
    /// Touches nothing but that node's bridge. On failure, nothing of the pod is left.
    @discardableResult
    public func addPod(_ name: String, node: String, kubernetesNamespace: String = "default", hostname: String? = nil) throws -> PodSandbox {
        guard ClusterConfig.isDNSLabel(name) else {
            throw KemuError(.invalidArgument, "pod name \"\(name)\" must be a DNS label: 1-63 lower-case letters, digits and '-'")
        }
        guard ClusterConfig.isDNSLabel(kubernetesNamespace) else {
            throw KemuError(.invalidArgument, "namespace \"\(kubernetesNamespace)\" must be a DNS label")
        }
        let index = try nodeIndex(node)
        let gateway = plan.podGateway(index)
        var sandbox = PodSandbox(name: name, node: node, namespace: plan.podNamespace(name), ip: gateway.address,
                                 gateway: gateway.address, hostVeth: AddressPlan.podVethName(name))
        try FileSystem.makeDirectories("\(stateDirectory)/pods")
        try FileSystem.makeDirectory("\(stateDirectory)/ips")
        sandbox.ip = try claimAddress(on: index, for: name)
        var undo: [() -> Void] = [{ self.releaseAddress(sandbox.ip, on: index) }]
        do {
            // The record is also the claim on the name: of two adds of one pod, one fails here.
            guard try FileSystem.createExclusive(podRecord(name), try encode(sandbox)) else {
                throw KemuError(.exists, "pod sandbox \(name) already exists")
            }
            undo.append { try? FileSystem.removeFile(self.podRecord(name)) }

            let pod = try backend.createNamespace(sandbox.namespace)
            undo.append { try? self.backend.deleteNamespace(sandbox.namespace) }
            // As container runtimes do: containers run as unprivileged users, who may still listen
            // on port 80 and ping inside their own pod's namespace.
            // ip netns exec POD sysctl -w net.ipv4.ip_unprivileged_port_start=0
            // ip netns exec POD sysctl -w net.ipv4.ping_group_range="0 2147483647"
            try backend.setSysctl(sandbox.namespace, "net.ipv4.ip_unprivileged_port_start", "0")
            try backend.setSysctl(sandbox.namespace, "net.ipv4.ping_group_range", "0 2147483647")
            // ip -n NODE link add vethX master cbr0 up type veth peer name eth0 netns POD
            let nodeHandle = try netlink(plan.namespace(node))
            try addPodVeth(sandbox, on: nodeHandle)
            undo.append { try? nodeHandle.linkDelete(sandbox.hostVeth) }
            // ip -n POD link set eth0 address 0a:58:IP — the MAC follows the address, so a pod that
            // gets the address of one just deleted is reached at once, whatever neighbours cached.
            try pod.linkSetAddress(AddressPlan.uplink, AddressPlan.podMAC(sandbox.ip))
            // ip -n POD link set lo up; ip -n POD addr add IP/32 dev eth0; ip -n POD link set eth0 up
            // ip -n POD route add GW dev eth0 proto static
            // ip -n POD route add default via GW dev eth0 proto static
            // A /32, as Calico and Cilium give pods: every packet, to a pod of the same node too,
            // goes through the node's IP layer — where NetworkPolicy is enforced, and where an
            // endpoint's reply to a client the node proxy dialled for is handed back to the proxy
            // (transparent dial; with a /24 it would go straight to the client over the bridge).
            try pod.linkSetUp("lo", true)
            try pod.addressAdd(IPv4Interface(sandbox.ip, prefixLength: 32), device: AddressPlan.uplink)
            try pod.linkSetUp(AddressPlan.uplink, true)
            try pod.routeAdd(Route(IPv4Network(gateway.address, prefixLength: 32)!, device: AddressPlan.uplink))
            try pod.routeAdd(.defaultRoute(via: gateway.address, device: AddressPlan.uplink))
            try backend.writeEtcFile(sandbox.namespace, "resolv.conf", plan.resolvConf(kubernetesNamespace: kubernetesNamespace))
            try backend.writeEtcFile(sandbox.namespace, "hosts", AddressPlan.hostsFile(ip: sandbox.ip, hostname: hostname ?? name))
            return sandbox
        } catch {
            for step in undo.reversed() { step() }
            throw error
        }
    }

    /// Removes a pod sandbox: takes its node-side veth down (the pod is off the bridge at once),
    /// deletes its namespace and /etc/netns files, and frees its address. The kernel then frees the
    /// veth pair with the namespace, batched with other deletions: deleting the veth here would cost
    /// a full RCU grace period (~20 ms) per pod. With `killProcesses`, first kills what runs in it.
    public func removePod(_ name: String, killProcesses: Bool = false) throws {
        guard let sandbox = try pod(name) else {
            throw KemuError(.notFound, "pod sandbox \(name) does not exist in cluster \(plan.cluster)")
        }
        if killProcesses {
            for pid in backend.processes(in: sandbox.namespace) { try backend.kill(pid) }
        }
        do {
            // ip -n NODE link set vethX down
            try netlink(plan.namespace(sandbox.node)).linkSetUp(sandbox.hostVeth, false)
        } catch let error as KemuError where error.code == .notFound {}
        // ip netns del POD
        try backend.deleteNamespace(sandbox.namespace)
        releaseAddress(sandbox.ip, on: try? nodeIndex(sandbox.node))
        try FileSystem.removeFile(podRecord(name))
    }

    /// The sandbox record of pod `name`, if there is one.
    public func pod(_ name: String) throws -> PodSandbox? {
        let path = podRecord(name)
        guard FileSystem.exists(path) else { return nil }
        let text = try FileSystem.readFile(path)
        if text.isEmpty { return nil }  // claimed, still being built
        return try JSONDecoder().decode(PodSandbox.self, from: Data(text.utf8))
    }

    /// Every pod sandbox, by name.
    public func pods() throws -> [PodSandbox] {
        try FileSystem.list("\(stateDirectory)/pods").compactMap { try pod($0) }
    }

    func podRecord(_ name: String) -> String { "\(stateDirectory)/pods/\(name)" }
    func addressClaim(_ ip: IPv4Address) -> String { "\(stateDirectory)/ips/\(ip)" }

    /// The lowest free address of the node's pod subnet. Claims are files created with O_EXCL, so
    /// concurrent adds (even from different processes) never get the same address. The search
    /// starts at this process's lowest known free slot rather than at .2 every time.
    func claimAddress(on index: Int, for pod: String) throws -> IPv4Address {
        let addresses = plan.podAddresses(index)
        let start = addressHints.withLock { $0[index] ?? 0 }
        for slot in start..<addresses.count where try FileSystem.createExclusive(addressClaim(addresses[slot]), pod) {
            addressHints.withLock { $0[index] = slot + 1 }
            return addresses[slot]
        }
        throw KemuError(.invalidState, "no free pod address on node index \(index) (\(plan.podCIDR(index)) is full)")
    }

    func releaseAddress(_ ip: IPv4Address, on index: Int?) {
        try? FileSystem.removeFile(addressClaim(ip))
        guard let index else { return }
        let slot = Int(ip.value - plan.podCIDR(index).address.value) - 2
        addressHints.withLock { $0[index] = min($0[index] ?? 0, slot) }
    }

    /// `ip link add vethX master cbr0 up type veth peer name eth0 netns POD`. A veth of the same
    /// name can still be there for a moment after the pod's previous incarnation was removed (the
    /// kernel frees it with the namespace, asynchronously): delete that leftover and try again.
    func addPodVeth(_ sandbox: PodSandbox, on node: any Netlink) throws {
        let add = {
            try node.linkAddVeth(sandbox.hostVeth, peer: AddressPlan.uplink, peerNamespace: NetworkNamespace(sandbox.namespace),
                                 master: AddressPlan.podBridge, up: true)
        }
        do {
            try add()
        } catch let error as KemuError where error.code == .exists {
            try? node.linkDelete(sandbox.hostVeth)
            try add()
        }
    }

    private func encode(_ sandbox: PodSandbox) throws -> String {
        String(decoding: try JSONEncoder().encode(sandbox), as: UTF8.self)
    }
}
