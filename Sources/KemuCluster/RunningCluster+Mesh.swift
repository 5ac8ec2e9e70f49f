import Glibc
import KemuAPI
import KemuNetwork
import KemuSystem

extension RunningCluster {
    /// Each node's `/mesh` page (its proxy's certificates, tunnels and policies), read inside the
    /// node's namespace; nil for a node whose proxy does not answer.
    public func meshStatus() async -> [(node: String, status: JSON?)] {
        let network = try? ClusterNetwork.load(cluster: name)
        return (network?.nodes.map(\.name) ?? []).map { node in
            (node, try? Self.get(path: "/mesh", port: 10249, in: NetworkNamespace(plan.namespace(node))))
        }
    }

    /// A small HTTP GET on 127.0.0.1 inside a namespace, its body parsed as JSON.
    static func get(path: String, port: Int, in namespace: NetworkNamespace) throws -> JSON {
        let fd = try namespace.connectedSocket(host: "127.0.0.1", port: port)
        defer { close(fd) }
        var timeout = timeval(tv_sec: 3, tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let request = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
        guard write(fd, request, request.count) == request.count else { throw KemuError(.invalidState, "cannot send to the proxy") }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while response.count < 16 << 20 {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            response += buffer[0..<n]
        }
        guard let split = response.firstRange(of: Array("\r\n\r\n".utf8)) else { throw KemuError(.invalidState, "no answer from the proxy") }
        return try JSON.parse(Array(response[split.upperBound...]))
    }
}
