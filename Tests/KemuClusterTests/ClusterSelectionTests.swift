import Foundation
import KemuAPI
import KemuCluster
import KemuSystem
import Testing

/// Which cluster a command means, as kind and kubectl users expect, on a state root of the test's own.
@Suite struct ClusterSelectionTests {
    /// A fresh state root (like /run/kemu) with clusters `up` marked running.
    func root(running up: [String]) throws -> ClusterSelection {
        let root = NSTemporaryDirectory() + "kemu-selection-\(UUID().uuidString)"
        for name in up {
            try FileSystem.makeDirectories("\(root)/\(name)")
            try FileSystem.writeFile("\(root)/\(name)/network.json", "{}")
        }
        try FileSystem.makeDirectories(root)
        return ClusterSelection(root: root)
    }

    @Test func aNamedClusterWins() throws {
        let s = try root(running: ["a", "b"])
        defer { try? FileSystem.removeTree(s.root) }
        try s.setCurrent("a")
        #expect(try s.resolve(named: "b", projectDefault: "demo") == "b")
        #expect(try s.resolve(named: "gone", projectDefault: nil) == "gone")
    }

    @Test func theOnlyRunningClusterIsFoundFromAnywhere() throws {
        let s = try root(running: ["demo"])
        defer { try? FileSystem.removeTree(s.root) }
        // Outside the project (no configs/cluster.yaml) as inside it.
        #expect(try s.resolve(named: nil, projectDefault: nil) == "demo")
        #expect(try s.resolve(named: nil, projectDefault: "other") == "demo")
        // A directory without network.json is no running cluster.
        try FileSystem.makeDirectories("\(s.root)/half")
        #expect(s.running() == ["demo"])
    }

    @Test func theCurrentClusterWinsWhileItRuns() throws {
        let s = try root(running: ["a", "b"])
        defer { try? FileSystem.removeTree(s.root) }
        try s.setCurrent("b")
        #expect(s.current == "b")
        #expect(try s.resolve(named: nil, projectDefault: "a") == "b")
        // Current but gone: the only one still running is meant.
        try FileSystem.removeTree("\(s.root)/a")
        try s.setCurrent("c")
        #expect(try s.resolve(named: nil, projectDefault: nil) == "b")
    }

    @Test func severalRunningAndNoneCurrentIsAnErrorThatNamesThem() throws {
        let s = try root(running: ["a", "b"])
        defer { try? FileSystem.removeTree(s.root) }
        #expect { try s.resolve(named: nil, projectDefault: "demo") } throws: { error in
            "\(error)".contains("2 clusters are running (a, b)") && "\(error)".contains("kemu use NAME")
        }
    }

    @Test func nothingRunningMeansTheProjectsClusterOrKemu() throws {
        let s = try root(running: [])
        defer { try? FileSystem.removeTree(s.root) }
        #expect(try s.resolve(named: nil, projectDefault: "demo") == "demo")
        #expect(try s.resolve(named: nil, projectDefault: nil) == "kemu")
    }

    @Test func aRemovedClusterIsCurrentNoMore() throws {
        let s = try root(running: ["a"])
        defer { try? FileSystem.removeTree(s.root) }
        try s.setCurrent("a")
        s.forget("b")
        #expect(s.current == "a")
        s.forget("a")
        #expect(s.current == nil)
    }
}

@Suite struct TextTableTests {
    @Test func columnsAlignAndTheLastIsNotPadded() {
        let text = TextTable.render(["NAME", "IP"], [["web-1", "10.244.1.2"], ["a", ""]])
        #expect(text == "NAME    IP\nweb-1   10.244.1.2\na\n")
    }

    @Test func clusterSummaryCountsPodsPerNodeAndReadiness() throws {
        let nodes: [KemuAPI.JSON] = [["metadata": ["name": "node-1"], "status": ["conditions": [["type": "Ready", "status": "True"]],
                                                                                   "addresses": [["type": "InternalIP", "address": "172.31.0.11"]]]]]
        let pods: [KemuAPI.JSON] = [["metadata": ["name": "web-1", "namespace": "default"], "spec": ["nodeName": "node-1", "containers": [["name": "c"]]],
                                     "status": ["phase": "Running", "podIP": "10.244.1.2", "containerStatuses": [["ready": true, "restartCount": 2]]]]]
        let text = ClusterSummary.render(nodes: nodes, pods: pods, services: [])
        #expect(text.contains("node-1   Ready    172.31.0.11   1"))
        #expect(text.contains("default     web-1   Running   1/1     2          10.244.1.2   node-1"))
    }
}
