import ArgumentParser
import KemuCluster
import KemuNetwork

struct NetStatus: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show hosts, links, addresses and routes.")

    @OptionGroup var options: ClusterOptions

    func run() throws {
        let network = try options.runningNetwork(for: "kemu net status")
        print(try NetworkStatusTable.render(network.status()))
    }
}
