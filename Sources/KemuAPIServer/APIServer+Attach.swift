import Foundation
import Glibc
import HummingbirdWebSocket
import KemuAPI
import KemuSystem
import NIOCore

/// `kubectl attach` and `kubectl run -i`: a WebSocket on `…/pods/NAME/attach` joined to the
/// running container. Its output is the log file its agent writes (stdout and stderr as one):
/// from the start for a `stdinOnce` container (a `run -i` session, so nothing it printed before
/// kubectl attached is lost), from the current end otherwise, as upstream shows. Its stdin, when
/// the spec asks for one, is the socket the agent feeds into the process (StdinRelay). The
/// session ends when the container does (kubectl reads its exit code from the pod's status).
extension PodExec {
    func attach(_ request: ExecRequest, inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async {
        let out = ChannelStream(outbound: outbound)
        let store = server.store
        guard let pod = store.get("pods", namespace: request.namespace, name: request.pod) else {
            return await out.finish(APIError.notFound("pods \"\(request.pod)\" not found").status)
        }
        let specs = pod[path: "spec.containers"]?.array ?? []
        let name = request.container ?? specs.first?["name"]?.string ?? ""
        guard let spec = specs.first(where: { $0["name"]?.string == name }) else {
            return await out.finish(APIError.badRequest("container \(name) is not valid for pod \(request.pod)").status)
        }
        guard let directory = server.podLogDirectory else {
            return await out.finish(APIError.badRequest("attach is not available: this API server runs without nodes").status)
        }
        let logs = "\(directory)/\(pod.namespace)_\(pod.name)_\(pod.uid)"
        guard let handle = FileHandle(forReadingAtPath: "\(logs)/\(name).log") else {
            return await out.finish(APIError.badRequest("container \(name) in pod \(request.pod) is waiting to start").status)
        }
        defer { try? handle.close() }
        if spec["stdinOnce"]?.bool != true { _ = try? handle.seekToEnd() }

        // stdin: channel 0 into the agent's socket; channel 255 (v5) or the session's end closes it.
        // Every frame is read, stdin or not, until the session ends (pongs and close among them).
        let stdinFD = request.stdin && spec["stdin"]?.bool == true ? (try? UnixSocket.connect(path: "\(logs)/\(name).stdin")) ?? -1 : -1
        let stdinTask: Task<Void, Never>? = Task {
            var fd = stdinFD
            defer { if fd >= 0 { close(fd) } }
            do {
                for try await message in inbound.messages(maxSize: 1 << 20) {
                    guard fd >= 0, let (channel, bytes) = Self.channelMessage(message) else { continue }
                    if channel == 255 || (channel == 0 && !Self.writeAll(fd, bytes)) {
                        close(fd)
                        fd = -1
                    }
                }
            } catch {}
        }
        defer { stdinTask?.cancel() }

        // Output until the container's process ends (or the pod goes), then what is left.
        while !Task.isCancelled {
            if let more = try? handle.readToEnd(), !more.isEmpty { await out.send(1, more) }
            guard let now = store.get("pods", namespace: pod.namespace, name: pod.name), now.uid == pod.uid else { break }
            let status = (now[path: "status.containerStatuses"]?.array ?? []).first { $0["name"]?.string == name }
            if status?[path: "state.terminated"] != nil { break }
            try? await Task.sleep(for: .milliseconds(50))
        }
        if let more = try? handle.readToEnd(), !more.isEmpty { await out.send(1, more) }
        // The stream ends well whatever the exit: kubectl reads the exit code from the pod's
        // status, as with upstream's attach (an error here would make it print the logs again).
        await out.finish(["metadata": [:], "status": "Success"])
    }
}
