import ArgumentParser
import Foundation
import KemuAPI
import KemuCluster
import KemuLab

struct MeshCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mesh", abstract: "The mesh on the node proxies: identities, tunnels, policies.",
        subcommands: [MeshStatusCommand.self, MeshTraceCommand.self, MeshRotateCommand.self, MeshExpireCommand.self, MeshRevokeCommand.self,
                      MeshSkewCommand.self])
}

struct MeshStatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Each node's mesh certificates (identity, expiry), open tunnels, streams and policies.",
        discussion: """
        Read from each node proxy's status port (/mesh). A namespace joins the mesh with the label \
        kemu.dev/mesh=enabled (or every namespace, with mesh: cluster in cluster.yaml).
        """)

    @OptionGroup var options: ClusterOptions

    func run() async throws {
        let cluster = try options.running(for: "kemu mesh status")
        let now = Date()
        let header = ["NODE", "IDENTITY", "EXPIRES IN", "TUNNELS", "STREAMS OUT/IN/DENIED", "POLICIES AUTHZ/PEER/STRICT-PODS"]
        var rows: [[String]] = []
        for (node, status) in await cluster.meshStatus() {
            guard let status else {
                rows.append([node, "<proxy not answering>", "", "", "", ""])
                continue
            }
            let streams = ["opened", "accepted", "denied"].map { String(status[path: "streams.\($0)"]?.int ?? 0) }.joined(separator: "/")
            let policies = ["authorization", "peerAuthentication", "strictPods"].map { String(status[path: "policies.\($0)"]?.int ?? 0) }.joined(separator: "/")
            var tunnels = String(status["openTunnels"]?.int ?? 0)
            // What the lab did to the node, said beside its tunnels.
            if let skew = status["clockSkewSeconds"]?.int, skew != 0 { tunnels += " (clock \(skew > 0 ? "+" : "-")\(Self.duration(Double(skew.magnitude))))" }
            let certificates = status["certificates"]?.array ?? []
            if certificates.isEmpty { rows.append([node, "<none yet>", "", tunnels, streams, policies]) }
            for (i, c) in certificates.enumerated() {
                let expires = (c["notAfter"]?.string).flatMap(Timestamp.parse).map { Self.duration($0.timeIntervalSince(now)) } ?? "?"
                rows.append(i == 0 ? [node, c["identity"]?.string ?? "", expires, tunnels, streams, policies]
                                   : ["", c["identity"]?.string ?? "", expires, "", "", ""])
            }
        }
        print(TextTable.render(header, rows), terminator: "")
    }

    static func duration(_ seconds: Double) -> String {
        if seconds <= 0 { return "expired" }
        let s = Int(seconds)
        return s >= 3600 ? "\(s / 3600)h\(s % 3600 / 60)m" : s >= 60 ? "\(s / 60)m\(s % 60)s" : "\(s)s"
    }
}

struct MeshRotateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate", abstract: "Renew every certificate a node's proxy holds, now (the old ones serve until the new come).")

    @OptionGroup var options: ClusterOptions
    @Argument(help: "Node.") var node: String

    func run() async throws {
        try await options.chaos(for: "kemu mesh rotate").rotateCertificates(node)
        print("the proxy of \(node) renews its certificates (see: kemu mesh status)")
    }
}

struct MeshExpireCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "expire", abstract: "Drop every certificate a node's proxy holds, as if expired (it asks for new ones at once).",
        discussion: "Until new ones come its meshed pods' new connections are refused; with the mesh CA stopped (kemu stop mesh-ca), until it starts.")

    @OptionGroup var options: ClusterOptions
    @Argument(help: "Node.") var node: String

    func run() async throws {
        try await options.chaos(for: "kemu mesh expire").expireCertificates(node)
        print("the proxy of \(node) lost its certificates and asks for new ones")
    }
}

struct MeshRevokeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke", abstract: "Revoke every certificate a node's proxy holds: every proxy refuses them, and the node asks for new ones.",
        discussion: """
        The serials go on the Node (annotation kemu.dev/revoked-certificates); tunnels they carry are closed. Until new \
        certificates come its meshed connections fail; with the mesh CA stopped (kemu stop mesh-ca), until it starts.
        """)

    @OptionGroup var options: ClusterOptions
    @Argument(help: "Node.") var node: String

    func run() async throws {
        let count = try await options.chaos(for: "kemu mesh revoke").revokeCertificates(node)
        print("revoked \(count) certificate(s) of the proxy of \(node); it asks for new ones")
    }
}

struct MeshSkewCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "skew", abstract: "Skew a node's clock as its proxy sees it: certificates' validity and its renewals follow that clock.",
        discussion: """
        DURATION is signed, as Go writes durations: 25h (ahead: its peers' certificates look expired), -90m (behind: new \
        certificates look not yet valid), 0 to put it right. Kept on the Node as annotation kemu.dev/clock-skew.
        """)

    @OptionGroup var options: ClusterOptions
    @Argument(help: "Node.") var node: String
    // All that is left: "-90m" is a duration here, not an option.
    @Argument(parsing: .allUnrecognized, help: "How far ahead (or behind, with -) of the machine's clock: 25h, -90m, 0.") var duration: [String] = []

    func validate() throws {
        guard duration.count == 1 else { throw ValidationError("give one DURATION (25h, -90m or 0), not \(duration.count)") }
    }

    func run() async throws {
        let by = duration.first ?? ""
        try await options.chaos(for: "kemu mesh skew").skewClock(node, by: by)
        print(Mesh.clockSkew(by) == 0 ? "the clock of \(node) is right again" : "the clock of \(node) runs \(by) from the machine's")
    }
}

struct StopMeshCA: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mesh-ca", abstract: "Stop the mesh CA: certificate requests wait unanswered; identities held work until they expire.")

    @OptionGroup var options: ClusterOptions

    func run() async throws {
        try await options.chaos(for: "kemu stop mesh-ca").stopMeshCA()
        print("mesh CA stopped; undo with: kemu start mesh-ca")
    }
}

struct StartMeshCA: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "mesh-ca", abstract: "Start the mesh CA again: what waited is answered.")

    @OptionGroup var options: ClusterOptions

    func run() async throws {
        try await options.chaos(for: "kemu start mesh-ca").startMeshCA()
        print("mesh CA started")
    }
}

struct MeshTraceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trace", abstract: "Say what the mesh does with a connection: its path, the destination's mode, and which AuthorizationPolicy decided.",
        discussion: "FROM and TO are pods (NAME in --namespace, or NAMESPACE/NAME); PORT is the destination pod's port. Example: kemu mesh trace shop/frontend shop/web-1:8080")

    @OptionGroup var options: ClusterOptions
    @Option(name: .shortAndLong, help: "The Kubernetes namespace of pods named without one.") var namespace = "default"
    @Argument(help: "The client pod.") var from: String
    @Argument(help: "The destination pod and its port: POD:PORT.") var to: String

    func run() async throws {
        let parts = to.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2, !parts[0].isEmpty, let port = UInt16(parts[1]), port > 0 else {
            throw ValidationError("TO \(to): give the pod and its port, as POD:PORT (web-1:8080)")
        }
        let cluster = try options.running(for: "kemu mesh trace")
        print(try await cluster.meshTrace(from: from, to: parts[0], port: port, namespace: namespace), terminator: "")
    }
}
