import Foundation
import KemuIP
import KemuNetlink
import KemuSystem

extension ClusterNetwork {
    /// Creates a pod sandbox on `node`: a namespace with lo up, a veth whose `eth0` end is in the pod
    /// and whose other end is a port of the node's cbr0, the next free address of the node's pod
    /// subnet, a default route via the node, and /etc/netns/<ns>/resolv.conf for cluster DNS.
    /// Touches nothing but that node's bridge. On failure, nothing of the pod is left.
    @discardableResult
    public func addPod(_ name: String, node: String, kubernetesNamespace: String = "default") throws -> PodSandbox {
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
        // The record doubles as the claim on the name: two adds of one pod cannot both pass here.
        guard try FileSystem.createExclusive(podRecord(name), "") else {
            throw KemuError(.exists, "pod sandbox \(name) already exists")
        }
        var undo: [() -> Void] = [{ try? FileSystem.removeFile(self.podRecord(name)) }]
        do {
            sandbox.ip = try claimAddress(on: index, for: name)
            undo.append { try? FileSystem.removeFile(self.addressClaim(sandbox.ip)) }
            try FileSystem.writeFile(podRecord(name), try encode(sandbox))

            try backend.createNamespace(sandbox.namespace)
            undo.append { try? self.backend.deleteNamespace(sandbox.namespace) }
            // ip -n NODE link add vethX master cbr0 up type veth peer name eth0 netns POD
            let nodeHandle = try netlink(plan.namespace(node))
            try nodeHandle.linkAddVeth(sandbox.hostVeth, peer: AddressPlan.uplink,
                                       peerNamespace: NetworkNamespace(sandbox.namespace),
                                       master: AddressPlan.podBridge, up: true)
            undo.append { try? nodeHandle.linkDelete(sandbox.hostVeth) }
            // ip -n POD link set lo up; ip -n POD addr add IP/24 dev eth0; ip -n POD link set eth0 up
            // ip -n POD route add default via GW dev eth0 proto static
            let pod = try backend.netlink(sandbox.namespace)
            try pod.linkSetUp("lo", true)
            try pod.addressAdd(IPv4Interface(sandbox.ip, prefixLength: gateway.prefixLength), device: AddressPlan.uplink)
            try pod.linkSetUp(AddressPlan.uplink, true)
            try pod.routeAdd(.defaultRoute(via: gateway.address, device: AddressPlan.uplink))
            try backend.writeEtcFile(sandbox.namespace, "resolv.conf", plan.resolvConf(kubernetesNamespace: kubernetesNamespace))
            return sandbox
        } catch {
            for step in undo.reversed() { step() }
            throw error
        }
    }

    /// Removes a pod sandbox: its node-side veth (the pod's eth0 goes with it), its namespace and
    /// /etc/netns files, its address. With `killProcesses`, first kills whatever still runs in it.
    public func removePod(_ name: String, killProcesses: Bool = false) throws {
        guard let sandbox = try pod(name) else {
            throw KemuError(.notFound, "pod sandbox \(name) does not exist in cluster \(plan.cluster)")
        }
        if killProcesses {
            for pid in backend.processes(in: sandbox.namespace) { try backend.kill(pid) }
        }
        do {
            // ip -n NODE link del vethX
            try netlink(plan.namespace(sandbox.node)).linkDelete(sandbox.hostVeth)
        } catch let error as KemuError where error.code == .notFound {}
        try backend.deleteNamespace(sandbox.namespace)
        try FileSystem.removeFile(addressClaim(sandbox.ip))
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
        try FileSystem.list("\(stateDirectory)/pods").filter { !$0.contains(".tmp-") }.compactMap { try pod($0) }
    }

    func podRecord(_ name: String) -> String { "\(stateDirectory)/pods/\(name)" }
    func addressClaim(_ ip: IPv4Address) -> String { "\(stateDirectory)/ips/\(ip)" }

    /// The lowest free address of the node's pod subnet. Claims are files created with O_EXCL, so
    /// concurrent adds (even from different processes) never get the same address.
    func claimAddress(on index: Int, for pod: String) throws -> IPv4Address {
        for ip in plan.podAddresses(index) where try FileSystem.createExclusive(addressClaim(ip), pod) {
            return ip
        }
        throw KemuError(.invalidState, "no free pod address on node index \(index) (\(plan.podCIDR(index)) is full)")
    }

    private func encode(_ sandbox: PodSandbox) throws -> String {
        String(decoding: try JSONEncoder().encode(sandbox), as: UTF8.self)
    }
}
