import KemuNetlink
import KemuNetwork

/// `kemu net status`: one row per link, then the routes kemu added.
enum StatusTable {
    static func render(_ hosts: [ClusterNetwork.HostStatus]) -> String {
        var links = [["HOST", "LINK", "KIND", "STATE", "MASTER", "ADDRESSES"]]
        var routes = [["HOST", "ROUTE"]]
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
        return format(links) + "\n" + format(routes)
    }

    static func format(_ rows: [[String]]) -> String {
        let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { i, cell in
                i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }.joined(separator: "\n") + "\n"
    }
}

import Foundation
