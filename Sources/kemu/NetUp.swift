import ArgumentParser
import Foundation
import KemuCluster
import KemuNetwork

struct NetUp: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "up", abstract: "Build a cluster's network from its config.")

    @OptionGroup var options: ClusterOptions

    func run() throws {
        try requireRoot("kemu net up")
        let config = try options.config()
        let network = try ClusterNetwork(config: config)
        let start = Date()
        try network.up()
        let ms = Int(Date().timeIntervalSince(start) * 1000)
        print("cluster \(config.name): network up in \(ms) ms — fabric \(config.network.fabricCIDR), \(config.nodes.count) nodes, pods \(config.network.podCIDR)")
        print(try NetworkStatusTable.render(network.status()))
    }
}
