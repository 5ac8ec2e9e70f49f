import Foundation
import KemuAPI
import KemuIP
import Testing

@testable import KemuPolicy

@Suite struct PolicyModelTests {
    static func ip(_ text: String) -> IPv4Address { IPv4Address(text)! }

    static let pods = [
        PolicyPod(namespace: "x", name: "a", ip: ip("10.244.1.2"), node: "node-1", labels: ["pod": "a"],
                  ports: [.init(name: "web", number: 8080, transport: "TCP")]),
        PolicyPod(namespace: "x", name: "b", ip: ip("10.244.2.2"), node: "node-2", labels: ["pod": "b"],
                  ports: [.init(name: "web", number: 9090, transport: "TCP")]),
        PolicyPod(namespace: "y", name: "a", ip: ip("10.244.1.3"), node: "node-1", labels: ["pod": "a"]),
    ]
    static let namespaces = ["x": ["team": "blue"], "y": ["team": "red"]]

    static func policy(_ yaml: JSON) -> PolicySpec {
        var p: JSON = ["apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "spec": yaml]
        p.name = "p"
        p.namespace = "x"
        return PolicySpec(p)
    }

    @Test func podsNoPolicySelectsAreOpenAndSelectedOnesOnlyTakeWhatARuleAllows() {
        let p = Self.policy(["podSelector": ["matchLabels": ["pod": "a"]],
                             "ingress": [["from": [["namespaceSelector": ["matchLabels": ["team": "red"]]]], "ports": [["port": "web"]]]]])
        let model = PolicyModel(policies: [p], pods: Self.pods, namespaces: Self.namespaces)
        let xa = Self.ip("10.244.1.2"), xb = Self.ip("10.244.2.2"), ya = Self.ip("10.244.1.3")
        // y/a (team red) to x/a's named port web (8080): allowed by the rule.
        #expect(model.verdict(from: ya, to: xa, port: 8080, transport: "TCP").ingress == .allowed(.init(policy: "x/p", direction: .ingress, index: 0)))
        // Another port, another protocol, a peer of the wrong namespace: denied by x/p.
        #expect(model.verdict(from: ya, to: xa, port: 9090, transport: "TCP").ingress == .denied(selectedBy: ["x/p"]))
        #expect(!model.verdict(from: ya, to: xa, port: 8080, transport: "UDP").allowed)
        #expect(!model.verdict(from: xb, to: xa, port: 8080, transport: "TCP").allowed)
        // x/b is not selected: open. Egress is not isolated (policyTypes defaulted to Ingress).
        #expect(model.verdict(from: xa, to: xb, port: 1, transport: "UDP") == .init(egress: .notIsolated, ingress: .notIsolated))
        // A pod to itself never leaves it.
        #expect(model.verdict(from: xa, to: xa, port: 9090, transport: "TCP").allowed)
    }

    @Test func egressNamedPortsResolveOnEachDestinationAndBlocksHonourExcept() {
        let p = Self.policy(["podSelector": [:], "policyTypes": ["Egress"],
                             "egress": [["ports": [["port": "web"]]],
                                        ["to": [["ipBlock": ["cidr": "10.244.0.0/16", "except": ["10.244.1.0/24", "10.244.1.3/32"]]]]]]])
        let model = PolicyModel(policies: [p], pods: Self.pods, namespaces: Self.namespaces)
        let xa = Self.ip("10.244.1.2"), xb = Self.ip("10.244.2.2"), ya = Self.ip("10.244.1.3")
        // x/b's web is 9090, x/a's is 8080.
        #expect(model.verdict(from: xa, to: xb, port: 9090, transport: "TCP").egress == .allowed(.init(policy: "x/p", direction: .egress, index: 0)))
        #expect(model.verdict(from: xa, to: xb, port: 8080, transport: "TCP").egress == .allowed(.init(policy: "x/p", direction: .egress, index: 1)))
        #expect(model.verdict(from: xb, to: xa, port: 8080, transport: "TCP").egress.allows)
        // 10.244.1.3 is in an except (so is all of 10.244.1.0/24): only a named port could let it by, and it has none.
        #expect(model.verdict(from: xb, to: ya, port: 80, transport: "TCP").egress == .denied(selectedBy: ["x/p"]))
        #expect(!model.verdict(from: xa, to: Self.ip("172.31.0.3"), port: 80, transport: "TCP").allowed)
    }

    @Test func aNodesRulesetHasChainsForIsolatedPodsAndCountersPerPolicy() {
        let p = Self.policy(["podSelector": [:], "ingress": [["from": [["podSelector": [:]]]]]])
        let model = PolicyModel(policies: [p], pods: Self.pods, namespaces: Self.namespaces)
        let (script, counters) = PolicyRuleset.render(model, node: "node-1", nodeAddresses: [Self.ip("10.244.1.1")], dns: Self.ip("10.96.0.10"), replyMark: 0x6b6d)
        // Both x pods are isolated; node-1 filters forwarded packets to its own (x/a) and the
        // proxy's dials to either.
        #expect(script.contains("chain i_10_244_1_2 {") && script.contains("chain i_10_244_2_2 {"))
        #expect(!script.contains("chain i_10_244_1_3"))
        #expect(script.contains("ip daddr vmap { 10.244.1.2 : jump i_10_244_1_2 }\n        meta mark & 0x100000 == 0x100000 limit rate 100/second log group 31 prefix \"kemu-drop forward\"\n        meta mark & 0x100000 == 0x100000 drop"))
        #expect(script.contains("ip daddr vmap { 10.244.1.2 : jump i_10_244_1_2, 10.244.2.2 : jump i_10_244_2_2 }"))
        #expect(script.contains("ip saddr { 10.244.1.1 } ip daddr { 10.244.1.2 } accept"))
        #expect(script.contains("set s0 { type ipv4_addr; elements = { 10.244.1.2, 10.244.2.2 }; }"))
        #expect(Set(counters.values) == [.init(policy: "x/p", direction: .ingress, allowed: true), .init(policy: "x/p", direction: .ingress, allowed: false)])
        // No egress isolation: nothing for the DNS on input; but what the mesh captures to a pod's
        // address (not the node's) is judged there for the ingress of every isolated pod.
        #expect(!script.contains("ip daddr 10.96.0.10"))
        #expect(script.contains("hook input") && script.contains("fib daddr type != local ip daddr vmap { 10.244.1.2 : jump i_10_244_1_2, 10.244.2.2 : jump i_10_244_2_2 }"))
        // No policy: the script only removes the table.
        let empty = PolicyRuleset.render(PolicyModel(), node: "node-1", dns: nil, replyMark: 0).script
        #expect(empty == "table ip kemu_policy\ndelete table ip kemu_policy\n")
    }

    @Test func unreadablePartsMatchNothingAndAreReported() {
        let p = Self.policy(["podSelector": ["matchExpressions": [["key": "pod", "operator": "Sideways"]]],
                             "ingress": [["from": [["ipBlock": ["cidr": "banana"]]]]]])
        #expect(p.problems.count == 2)
        let model = PolicyModel(policies: [p], pods: Self.pods, namespaces: Self.namespaces)
        #expect(model.ingress.isEmpty)
        #expect(PolicyRuleset.minimal([IPv4Network("10.0.0.0/8")!, IPv4Network("10.1.0.0/16")!, IPv4Network("10.0.0.0/8")!]) == [IPv4Network("10.0.0.0/8")!])
    }
}

@Suite struct NFLogTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/corpus/nflog")

    @Test func theKernelsMessagesGiveEachPacketsAddressesPortsAndPrefix() throws {
        let bytes = Array(try Data(contentsOf: Self.corpus.appendingPathComponent("two-messages")))
        let packets = NFLog.packets(in: bytes)
        #expect(packets.count == 2)
        #expect(packets.first == LoggedPacket(prefix: "kemu-drop forward", source: IPv4Address("10.244.2.3")!, destination: IPv4Address("10.244.1.2")!,
                                              transport: "TCP", sourcePort: 41234, destinationPort: 80))
        #expect(packets.last?.transport == "UDP" && packets.last?.destinationPort == 53 && packets.last?.prefix == "kemu-drop input")
        // Cut anywhere, a message is skipped or read whole: never a trap, never a wrong packet.
        for cut in 0..<bytes.count {
            let some = NFLog.packets(in: Array(bytes[..<cut]))
            #expect(some.count <= 1 && (some.first == nil || some.first == packets.first))
        }
    }
}
