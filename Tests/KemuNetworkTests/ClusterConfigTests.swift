import Foundation
import KemuIP
@testable import KemuNetwork
import Testing

@Suite struct ClusterConfigTests {
    func errors(_ yaml: String) -> [ConfigError] {
        do {
            _ = try ClusterConfig.parse(yaml: yaml)
            return []
        } catch let e as ConfigErrors {
            return e.errors
        } catch {
            Issue.record("unexpected error \(error)")
            return []
        }
    }

    func fields(_ yaml: String) -> [String] { errors(yaml).map(\.field) }

    @Test func emptyFileIsTheDefaultTwoNodeCluster() throws {
        let config = try ClusterConfig.parse(yaml: "")
        #expect(config == ClusterConfig())
        #expect(config.nodes == ["node-1", "node-2"])
        #expect(config.network.serviceCIDR.description == "10.96.0.0/16")
    }

    @Test func shippedSampleParsesToTheDocumentedDefaults() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let text = try String(contentsOf: root.appendingPathComponent("configs/cluster.yaml"), encoding: .utf8)
        var expected = ClusterConfig()
        expected.name = "demo"
        expected.controlPlane = ControlPlaneConfig()
        #expect(try ClusterConfig.parse(yaml: text) == expected)
    }

    @Test func nodesAsCountOrNames() throws {
        #expect(try ClusterConfig.parse(yaml: "nodes: 3").nodes == ["node-1", "node-2", "node-3"])
        #expect(try ClusterConfig.parse(yaml: "nodes: [alpha, beta]").nodes == ["alpha", "beta"])
        #expect(fields("nodes: 0") == ["nodes"])
        #expect(fields("nodes: {a: 1}") == ["nodes"])
    }

    @Test func unknownAndMistypedKeysAreNamed() {
        #expect(fields("nmae: x") == ["nmae"])
        #expect(fields("network:\n  podCidr: 10.0.0.0/8") == ["network.podCidr"])
        #expect(fields("network:\n  nodePodPrefixLength: twentyfour") == ["network.nodePodPrefixLength"])
        #expect(errors("network: [1, 2]").first?.field == "network")
        #expect(errors(":\n  - [").first?.message.contains("not valid YAML") == true)
    }

    @Test func zonesMapNodesAndNameWhatIsWrong() throws {
        let config = try ClusterConfig.parse(yaml: "nodes: 3\nzones: {zone-a: [node-1, node-2], zone-b: [node-3]}")
        #expect(config.zones == ["node-1": "zone-a", "node-2": "zone-a", "node-3": "zone-b"])
        #expect(fields("nodes: 2\nzones: {zone-a: [node-9]}") == ["zones.zone-a"])
        #expect(fields("nodes: 2\nzones: {zone-a: [node-1], zone-b: [node-1]}") == ["zones.zone-b[0]"])
        #expect(fields("nodes: 2\nzones: [node-1]") == ["zones"])
        #expect(fields("nodes: 2\nzones: {-bad-: [node-1]}") == ["zones.-bad-"])
    }

    @Test func nodeResourcesAreQuantities() throws {
        let config = try ClusterConfig.parse(yaml: "nodeResources: {cpu: 3500m, memory: 512Mi, pods: 20}")
        #expect(config.nodeResources.cpu == "3500m" && config.nodeResources.memory == "512Mi" && config.nodeResources.pods == 20)
        #expect(fields("nodeResources: {cpu: lots}") == ["nodeResources.cpu"])
        #expect(fields("nodeResources: {memory: 8GB, pods: 0}") == ["nodeResources.memory", "nodeResources.pods"])
        #expect(fields("nodeResources: {gpu: 1}") == ["nodeResources.gpu"])
    }

    @Test func theControlPlanesClockTakesDurations() throws {
        let config = try ClusterConfig.parse(yaml: "controlPlane: {nodeGracePeriod: 40s, podEvictionDelay: 5m}")
        #expect(config.controlPlane?.nodeGracePeriod == 40 && config.controlPlane?.podEvictionDelay == 300)
        let partly = try ClusterConfig.parse(yaml: "controlPlane: {podEvictionDelay: 1500ms}")
        #expect(partly.controlPlane?.nodeGracePeriod == 5 && partly.controlPlane?.podEvictionDelay == 1.5)
        #expect(try ClusterConfig.parse(yaml: "controlPlane: {nodeGracePeriod: 7}").controlPlane?.nodeGracePeriod == 7)
        #expect(try ClusterConfig.parse(yaml: "nodes: 2").controlPlane == nil)
        #expect(fields("controlPlane: {nodeGracePeriod: 1s}") == ["controlPlane.nodeGracePeriod"])
        #expect(fields("controlPlane: {podEvictionDelay: -5s, nodeGracePeriod: soon}") == ["controlPlane.nodeGracePeriod", "controlPlane.podEvictionDelay"])
        #expect(fields("controlPlane: {podEvictionDelay: 1e400}") == ["controlPlane.podEvictionDelay"])
        #expect(fields("controlPlane: {podEvictionDelay: 30d}") == ["controlPlane.podEvictionDelay"])
        #expect(fields("controlPlane: {graceperiod: 5s}") == ["controlPlane.graceperiod"])
        #expect(fields("controlPlane: 5s") == ["controlPlane"])
    }

    @Test func invalidCIDRsNameTheirField() {
        let e = errors("network:\n  podCIDR: 10.244.0.0/33\n  serviceCIDR: 10.96.1.0/16")
        #expect(e.map(\.field) == ["network.podCIDR", "network.serviceCIDR"])
        #expect(e[0].message.contains("10.244.0.0/33"))
    }

    @Test func overlappingRangesAreRefused() {
        let e = errors("network:\n  serviceCIDR: 10.244.128.0/17")
        #expect(e.map(\.field) == ["network.serviceCIDR"])
        #expect(e[0].message.contains("overlaps network.podCIDR"))
        #expect(fields("network:\n  loadBalancerPool: 172.31.0.128/25") == ["network.loadBalancerPool"])
    }

    @Test func podCIDRMustHoldEveryNode() {
        #expect(fields("nodes: 3\nnetwork:\n  podCIDR: 10.244.0.0/23") == ["network.podCIDR"])
        #expect(fields("nodes: 1\nnetwork:\n  podCIDR: 10.244.0.0/23").isEmpty)
        #expect(fields("network:\n  nodePodPrefixLength: 12") == ["network.nodePodPrefixLength"])
        #expect(fields("nodes: 250") == ["network.fabricCIDR"])
    }

    @Test func namesThatWouldBreakInterfacesOrPrefixesAreRefused() {
        #expect(fields("nodes: [worker-number-one-x]") == ["nodes[0]"])
        #expect(errors("nodes: [worker-number-one-x]").first?.message.contains("at most 15") == true)
        #expect(fields("nodes: [lb]") == ["nodes[0]"])
        #expect(fields("nodes: [a, a]") == ["nodes[1]"])
        #expect(fields("nodes: [Node1]") == ["nodes[0]"])
        #expect(fields("name: my-lab") == ["name"])
        #expect(fields("name: waytoolongclustername") == ["name"])
        #expect(fields("name: 1abc") == ["name"])
    }

    @Test func otherNetworkFields() {
        #expect(fields("network:\n  nodePortRange: 32767-30000") == ["network.nodePortRange"])
        #expect(fields("network:\n  nodePortRange: lots") == ["network.nodePortRange"])
        #expect(fields("network:\n  clusterDomain: Cluster_Local") == ["network.clusterDomain"])
    }
}
