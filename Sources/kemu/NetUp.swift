import ArgumentParser
import Foundation
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
        print(try StatusTable.render(network.status()))
    }
}

struct NetDown: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "down", abstract: "Remove everything of a cluster's network, found by name.")

    @OptionGroup var options: ClusterOptions

    func run() throws {
        try requireRoot("kemu net down")
        let cluster = try options.clusterName()
        let report = try ClusterNetwork.teardown(cluster: cluster)
        if report.namespaces.isEmpty && report.etcDirectories.isEmpty {
            print("cluster \(cluster): nothing to remove")
        } else {
            print("cluster \(cluster): removed \(report.namespaces.count) namespaces, killed \(report.killedProcesses.count) processes")
        }
    }
}

struct NetStatus: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show hosts, links, addresses and routes.")

    @OptionGroup var options: ClusterOptions

    func run() throws {
        try requireRoot("kemu net status")
        let network = try ClusterNetwork.load(cluster: try options.clusterName())
        print(try StatusTable.render(network.status()))
    }
}
