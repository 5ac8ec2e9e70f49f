import Foundation
import Glibc
import KemuAPI
import KemuIP
import KemuNetwork
import KemuSystem

extension RunningCluster {
    /// Each node's `/mesh` page (its proxy's certificates, tunnels and policies), read inside the
    /// node's namespace; nil for a node whose proxy does not answer.
    public func meshStatus() async -> [(node: String, status: JSON?)] {
        let network = try? ClusterNetwork.load(cluster: name)
        return (network?.nodes.map(\.name) ?? []).map { node in (node, meshStatus(node: node)) }
    }

    /// One node's `/mesh` page; nil when its proxy does not answer.
    public func meshStatus(node: String) -> JSON? {
        try? Self.get(path: "/mesh", port: 10249, in: NetworkNamespace(plan.namespace(node)))
    }

    /// What the mesh does with a TCP connection from pod `from` to pod `to` on `port` (the pod's
    /// port), from the same policies the proxies apply: how it travels, the destination's
    /// PeerAuthentication mode, and AuthorizationPolicy's verdict with the policy that decided.
    public func meshTrace(from: String, to: String, port: UInt16, namespace: String) async throws -> String {
        let security = "security.istio.io"
        guard let authz = APIResources.find(group: security, version: "v1", resource: "authorizationpolicies"),
              let peer = APIResources.find(group: security, version: "v1", resource: "peerauthentications") else {
            throw KemuError(.invalidState, "this kemu serves no mesh policies")
        }
        let source = try await tracePod(from, namespace: namespace), destination = try await tracePod(to, namespace: namespace)
        let network = try ClusterNetwork.load(cluster: name)
        let clusterWide = network.config.mesh == "cluster"
        var meshed: [String: Bool] = [:]
        for ns in Set([source.namespace, destination.namespace]) {
            let labels = (try? await client.get(APIResources.namespaces, name: ns))?.labels ?? [:]
            meshed[ns] = clusterWide || Mesh.enabled(labels: labels)
        }
        let domain = plan.network.clusterDomain
        func identity(_ pod: JSON) -> SPIFFEID {
            .workload(domain: domain, namespace: pod.namespace, serviceAccount: pod[path: "spec.serviceAccountName"]?.string ?? "default")
        }
        let sourceMeshed = meshed[source.namespace] ?? false, destinationMeshed = meshed[destination.namespace] ?? false
        let (sourceNode, destinationNode) = (source[path: "spec.nodeName"]?.string ?? "?", destination[path: "spec.nodeName"]?.string ?? "?")
        var lines = ["from:  \(source.namespace)/\(source.name) on \(sourceNode)" + (sourceMeshed ? ", meshed as \(identity(source))" : ", not in the mesh"),
                     "to:    \(destination.namespace)/\(destination.name):\(port) on \(destinationNode)"
                        + (destinationMeshed ? ", meshed as \(identity(destination))" : ", not in the mesh")]
        guard destinationMeshed else {
            lines.append("path:  plain (the destination is not in the mesh; no mesh policy applies)")
            lines.append("verdict: ALLOWED by the mesh")
            return lines.joined(separator: "\n") + "\n"
        }
        let peers = try await client.list(peer).items.compactMap { try? PeerAuthentication.parse($0).get() }.sorted { ($0.namespace, $0.name) < ($1.namespace, $1.name) }
        let deciding = PeerAuthentication.deciding(peers, namespace: destination.namespace, labels: destination.labels)
        let mode = deciding.map { "\($0.mode.rawValue) (PeerAuthentication \($0.namespace)/\($0.name))" } ?? "PERMISSIVE (no PeerAuthentication)"
        let path = !sourceMeshed ? "plaintext: judged by \(sourceNode)'s proxy through a Service, by \(destinationNode)'s to the pod's own address"
            : sourceNode == destinationNode ? "same node: judged by \(sourceNode)'s proxy with the source's identity"
            : "HBONE tunnel \(sourceNode) → \(destinationNode):\(Mesh.tunnelPort), mutual TLS"
        lines.append("path:  \(path)")
        lines.append("mode:  \(mode)")
        if !sourceMeshed && deciding?.mode == .strict {
            lines.append("verdict: REFUSED (STRICT takes mutual TLS only; the source is not in the mesh)")
            return lines.joined(separator: "\n") + "\n"
        }
        let policies = try await client.list(authz).items.compactMap { try? AuthorizationPolicy.parse($0).get() }.sorted { ($0.namespace, $0.name) < ($1.namespace, $1.name) }
        let sourceIP = source[path: "status.podIP"]?.string.flatMap(IPv4Address.init)?.value
        let request = AuthorizationPolicy.Request(principal: sourceMeshed ? identity(source).principal : nil,
                                                  sourceNamespace: sourceMeshed ? source.namespace : nil, sourceIP: sourceIP, port: port)
        let decision = AuthorizationPolicy.evaluate(policies, namespace: destination.namespace, labels: destination.labels, request)
        let by = decision.policy.map { "AuthorizationPolicy \($0.namespace)/\($0.name) (\($0.action.rawValue))" }
        lines.append("verdict: " + (decision.allowed ? "ALLOWED" + (by.map { " by \($0)" } ?? " (no AuthorizationPolicy selects the destination)")
                                                     : "DENIED by " + (by ?? "the ALLOW policies: none matches")))
        return lines.joined(separator: "\n") + "\n"
    }

    func tracePod(_ text: String, namespace: String) async throws -> JSON {
        let parts = text.split(separator: "/", maxSplits: 1).map(String.init)
        return try await pod(parts.count == 2 ? parts[1] : text, namespace: parts.count == 2 ? parts[0] : namespace)
    }

    /// A small HTTP GET on 127.0.0.1 inside a namespace, its body parsed as JSON.
    static func contentLength(_ head: ArraySlice<UInt8>) -> Int? {
        String(decoding: head, as: UTF8.self).split(separator: "\r\n")
            .first { $0.lowercased().hasPrefix("content-length:") }
            .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) }
            .flatMap { (0...(16 << 20)).contains($0) ? $0 : nil }
    }

    static func get(path: String, port: Int, in namespace: NetworkNamespace) throws -> JSON {
        let fd = try namespace.connectedSocket(host: "127.0.0.1", port: port)
        defer { close(fd) }
        var timeout = timeval(tv_sec: 3, tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let request = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
        guard write(fd, request, request.count) == request.count else { throw KemuError(.invalidState, "cannot send to the proxy") }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        // To the end of the body its Content-Length gives (the status server keeps the
        // connection open, HTTP/1.0 or not), or of the stream.
        var wanted: Int?
        while response.count < 16 << 20 {
            if let split = response.firstRange(of: Array("\r\n\r\n".utf8)) {
                wanted = wanted ?? Self.contentLength(response[..<split.lowerBound]).map { split.upperBound + $0 }
                if let wanted, response.count >= wanted { break }
            }
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            response += buffer[0..<n]
        }
        guard let split = response.firstRange(of: Array("\r\n\r\n".utf8)) else { throw KemuError(.invalidState, "no answer from the proxy") }
        return try JSON.parse(Array(response[split.upperBound...]))
    }
}
