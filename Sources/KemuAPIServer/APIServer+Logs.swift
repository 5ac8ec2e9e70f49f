import Foundation
import Hummingbird
import KemuAPI
import NIOCore

extension APIServer {
    /// `GET …/pods/NAME/log`: what a container's process wrote, as text/plain. The node agents
    /// write each container's stdout and stderr to `podLogDirectory/<ns>_<pod>_<uid>/<c>.log` on
    /// this same machine, so the server reads the file instead of asking the node (upstream
    /// proxies to the kubelet). `follow` streams what is appended until the pod goes or the
    /// server stops; `tailLines` and `limitBytes` as upstream.
    func logs(_ t: Target, _ name: String, _ query: Query) throws -> Response {
        let tail = try query.integer("tailLines", in: 0...Int64.max)
        let limit = try query.integer("limitBytes", in: 1...Int64.max)
        let pod = try get(t, name)
        guard let directory = podLogDirectory else {
            throw APIError.badRequest("pod logs are not available: this API server runs without nodes (start a cluster with kemu up)")
        }
        let containers = (pod[path: "spec.containers"]?.array ?? []).compactMap { $0["name"]?.string }
        let inits = (pod[path: "spec.initContainers"]?.array ?? []).compactMap { $0["name"]?.string }
        let container: String
        if let asked = query["container"], !asked.isEmpty {
            guard containers.contains(asked) || inits.contains(asked) else {
                throw APIError.badRequest("container \(asked) is not valid for pod \(name)")
            }
            container = asked
        } else if containers.count == 1 {
            container = containers[0]
        } else {
            throw APIError.badRequest("a container name must be specified for pod \(name), choose one of: [\(containers.joined(separator: " "))]")
        }
        let path = "\(directory)/\(pod.namespace)_\(pod.name)_\(pod.uid)/\(container).log"
        guard let handle = FileHandle(forReadingAtPath: path) else {
            let reason = (pod[path: "status.containerStatuses"]?.array ?? []).first { $0["name"]?.string == container }?[path: "state.waiting.reason"]?.string
            throw APIError.badRequest("container \"\(container)\" in pod \"\(name)\" is waiting to start: \(reason ?? "ContainerCreating")")
        }
        var text: Data
        do {
            text = try handle.readToEnd() ?? Data()
        } catch {
            try? handle.close()
            throw APIError(code: 500, reason: "InternalError", message: "reading the log of container \(container): \(error)")
        }
        if let tail { text = Self.lastLines(text, Int(clamping: tail)) }
        if let limit, text.count > limit { text = text.prefix(Int(clamping: limit)) }
        let headers: HTTPFields = [.contentType: "text/plain"]
        guard query.flag("follow") else {
            try? handle.close()
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: text)))
        }
        let (store, uid, namespace) = (self.store, pod.uid, pod.namespace)
        let chunks = AsyncStream<ByteBuffer> { continuation in
            let id = watches.add(continuation)
            continuation.yield(ByteBuffer(bytes: text))
            // The follower alone reads and closes the file: a client that goes away (Ctrl-C on
            // kubectl logs -f) only cancels it, so nothing reads a handle closed under it.
            let follower = Task {
                defer { try? handle.close() }
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(100))
                    if Task.isCancelled { break }
                    let more: Data?
                    do { more = try handle.readToEnd() } catch { break }  // nil: nothing new yet
                    if let more, !more.isEmpty { continuation.yield(ByteBuffer(bytes: more)) }
                    // Ends with the pod (the agent's final delete), as kubectl logs -f does.
                    if store.get("pods", namespace: namespace, name: name)?.uid != uid { break }
                }
                continuation.finish()
            }
            continuation.onTermination = { [watches] _ in
                watches.remove(id)
                follower.cancel()
            }
        }
        return Response(status: .ok, headers: headers, body: .init(asyncSequence: chunks))
    }

    static func lastLines(_ data: Data, _ count: Int) -> Data {
        guard count > 0 else { return Data() }
        var newlines = 0
        var index = data.endIndex
        // A trailing newline ends the last line; it does not start another.
        if index > data.startIndex, data[data.index(before: index)] == 0x0A { index = data.index(before: index) }
        while index > data.startIndex {
            let previous = data.index(before: index)
            if data[previous] == 0x0A {
                newlines += 1
                if newlines == count { return data[index...] }
            }
            index = previous
        }
        return data
    }
}
