import KemuIP
@testable import KemuNetwork
import Testing

@Suite struct AddressPlanTests {
    let plan = AddressPlan(ClusterConfig.named("lab"))

    @Test func defaultsMatchTheDesign() {
        #expect(plan.controlPlaneIP.description == "172.31.0.2")
        #expect(plan.clientIP.description == "172.31.0.3")
        #expect(plan.loadBalancerIP.description == "172.31.0.4")
        #expect(plan.nodeIP(1).description == "172.31.0.11")
        #expect(plan.podCIDR(2).description == "10.244.2.0/24")
        #expect(plan.podGateway(2).description == "10.244.2.1/24")
        #expect(plan.kubernetesServiceIP.description == "10.96.0.1")
        #expect(plan.dnsServiceIP.description == "10.96.0.10")
        #expect(plan.namespace("node-1") == "kemu-lab-node-1")
        #expect(plan.podNamespace("web") == "kemu-lab-p-web")
    }

    @Test func podAddressesSkipNetworkGatewayAndBroadcast() {
        let addresses = plan.podAddresses(1)
        #expect(addresses.first?.description == "10.244.1.2")
        #expect(addresses.last?.description == "10.244.1.254")
        #expect(addresses.count == 253)
    }

    @Test func resolvConfSearchesTheKubernetesDomains() {
        #expect(plan.resolvConf(kubernetesNamespace: "shop") == """
        search shop.svc.cluster.local svc.cluster.local cluster.local
        nameserver 10.96.0.10
        options ndots:5

        """)
    }

    @Test func podVethNamesFitAnInterfaceNameAndAreStable() {
        let long = String(repeating: "a", count: 63)
        #expect(AddressPlan.podVethName(long).count == 12)
        #expect(AddressPlan.podVethName("web") == AddressPlan.podVethName("web"))
        #expect(AddressPlan.podVethName("web") != AddressPlan.podVethName("web2"))
        // FNV-1a of "a" is 0xe40c292c: the same function netns-scripts/common.sh computes in bash.
        #expect(AddressPlan.podVethName("a") == "vethe40c292c")
    }
}
