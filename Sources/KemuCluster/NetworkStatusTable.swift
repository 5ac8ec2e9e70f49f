import KemuNetlink
import KemuNetwork

/// `kemu net status`: one row per link, then the routes kemu added.
public enum NetworkStatusTable {
    public static func render(_ hosts: [ClusterNetwork.HostStatus]) -> String {
        var links: [[String]] = []
        var routes: [[String]] = []
        for host in hosts {
            for link in host.snapshot.links where link.name != "lo" {
                let addresses = host.snapshot.addresses(on: link.name).map(\.description).joined(separator: " ")
                links.append([host.host, link.name, link.kind.isEmpty ? "-" : link.kind, link.up ? "up" : "down",
                              link.master ?? "-", addresses.isEmpty ? "-" : addresses])
            }
            for route in host.snapshot.routes where route.proto != RouteProtocol.kernel.rawValue {
                routes.append([host.host, route.description])
            }
        }
        return TextTable.render(["HOST", "LINK", "KIND", "STATE", "MASTER", "ADDRESSES"], links, separator: "  ") + "\n"
            + TextTable.render(["HOST", "ROUTE"], routes, separator: "  ")
    }
}
