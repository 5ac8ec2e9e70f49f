import Foundation
import CKemuShim
import Glibc
import HTTPTypes
import HummingbirdWebSocket
import KemuAPI
import KemuPKI
import KemuSystem
import Logging
import NIOCore
import NIOSSL

/// `kubectl exec` (and `attach`-less exec from any client speaking `v5.channel.k8s.io`): a
/// WebSocket upgrade on `…/pods/NAME/exec?command=…`, the command run inside the pod's network
/// namespace (seeing its /etc/netns files), stdin on channel 0, stdout 1, stderr 2, and the
/// outcome as a Status on channel 3, as upstream's kubelet streams it.
struct PodExec: Sendable {
    static let protocols = ["v5.channel.k8s.io", "v4.channel.k8s.io"]
    let server: APIServer
    /// `kemu-<cluster>-p-`: pod sandboxes are this plus `PodNames.sandbox`.
    let namespacePrefix: String

    /// Whether to upgrade: an authenticated exec request for a pod with a sandbox (or a
    /// port-forward one, PodPortForward's).
    func shouldUpgrade(_ request: HTTPRequest, _ channel: any Channel) async -> ShouldUpgradeResult<WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>> {
        guard let target = request.path else { return .dontUpgrade }
        let offered = (request.headerFields[.secWebSocketProtocol] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        if let forward = PortForwardRequest(target) {
            // SPDY tunnelled (kubectl), or channels for the ports in the query (the python client).
            let tunnel = offered.contains(PodPortForward.tunnel)
            guard tunnel || (offered.contains(PodPortForward.channels) && !(forward.ports ?? []).isEmpty),
                  await authorized(request, channel, target, subresource: "portforward", namespace: forward.namespace, pod: forward.pod) else {
                return .dontUpgrade
            }
            let session = PodPortForward(server: server, namespacePrefix: namespacePrefix)
            return .upgrade([.secWebSocketProtocol: tunnel ? PodPortForward.tunnel : PodPortForward.channels]) { inbound, outbound, _ in
                if tunnel {
                    await session.run(forward, inbound: inbound, outbound: outbound)
                } else {
                    await session.runChannels(forward, inbound: inbound, outbound: outbound)
                }
            }
        }
        guard let exec = ExecRequest(target), let chosen = Self.protocols.first(where: offered.contains),
              await authorized(request, channel, target, subresource: exec.attach ? "attach" : "exec", namespace: exec.namespace,
                               pod: exec.pod) else {
            return .dontUpgrade
        }
        let headers: HTTPFields = [.secWebSocketProtocol: chosen]
        return .upgrade(headers) { inbound, outbound, _ in
            if exec.attach {
                await attach(exec, inbound: inbound, outbound: outbound)
            } else {
                await run(exec, inbound: inbound, outbound: outbound)
            }
        }
    }

    /// Whether the caller may `create` the pod's subresource (always, without an authenticator);
    /// audited as any request. Refused callers are not upgraded: the plain request then gets its
    /// 401 or 403.
    func authorized(_ request: HTTPRequest, _ channel: any Channel, _ target: String, subresource: String, namespace: String,
                    pod: String) async -> Bool {
        guard let authenticator = server.authenticator else { return true }
        let token = Authenticator.bearerToken(request.headerFields[.authorization])
        guard let caller = await authenticator.identify(token: token, channel: channel),
              let user = try? server.impersonated(caller, request.headerFields) else { return false }
        let asked = RequestAttributes(verb: "create", resource: "pods", subresource: subresource, namespace: namespace, name: pod)
        let decision = server.authorizer.authorize(user, asked)
        guard decision.allowed else { return false }
        server.audit?.record(.init(attributes: asked, user: user, impersonatedBy: user != caller ? caller : nil, uri: target,
                                   sourceIP: channel.remoteAddress?.ipAddress, userAgent: request.headerFields[.userAgent],
                                   code: 101, received: Date(), decision: decision.reason))
        return true
    }

    func run(_ exec: ExecRequest, inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async {
        let out = ChannelStream(outbound: outbound)
        guard let pod = server.store.get("pods", namespace: exec.namespace, name: exec.pod) else {
            return await out.finish(APIError.notFound("pods \"\(exec.pod)\" not found").status)
        }
        let containers = (pod[path: "spec.containers"]?.array ?? []).compactMap { $0["name"]?.string }
        if let container = exec.container, !containers.contains(container) {
            return await out.finish(APIError.badRequest("container \(container) is not valid for pod \(exec.pod)").status)
        }
        let namespace = NetworkNamespace(namespacePrefix + PodNames.sandbox(pod))
        guard !exec.command.isEmpty else { return await out.finish(APIError.badRequest("you must specify at least one command for the container").status) }
        guard namespace.exists else {
            return await out.finish(APIError.badRequest("pod \(exec.pod) has no running sandbox (phase \(pod[path: "status.phase"]?.string ?? "Pending"))").status)
        }
        // Inside the container: its namespaces, its user, its environment (never root on the host).
        guard let pid = PodNames.containerProcess(pod, container: exec.container),
              var options = Spawn.Options.inContainer(pid: pid, sandbox: namespace) else {
            let name = exec.container ?? containers.first ?? ""
            return await out.finish(APIError.badRequest("container \(name) is not running in pod \(exec.pod)").status)
        }
        var pipes: [[Int32]] = [[-1, -1], [-1, -1], [-1, -1]]
        if exec.tty {
            // One terminal for all three (kubectl -t): its primary end is stdin's writer and
            // stdout's reader; no stderr channel, as upstream.
            guard let (primary, secondary) = try? Terminal.openPair() else {
                return await out.finish(APIError(code: 500, reason: "InternalError", message: "cannot allocate a terminal for the command").status)
            }
            pipes = [[secondary, dup(primary)], [primary, dup(secondary)], [-1, -1]]
            options.stdin = secondary
            options.stdout = secondary
            options.stderr = secondary
            options.newSession = true
            options.controllingTerminal = true
        } else {
            for i in 0..<3 { _ = kemu_pipe_cloexec(&pipes[i]) }
            options.stdin = exec.stdin ? pipes[0][0] : -1
            options.stdout = pipes[1][1]
            options.stderr = pipes[2][1]
        }
        let stdinFD = pipes[0][1]
        let sized = AsyncStream<Void>.makeStream()
        // stdin: channel 0 frames into the pipe; channel 255 (v5) closes it; channel 4 resizes
        // the terminal ({"Width": …, "Height": …}). Every frame is read, stdin or not, until the
        // session ends: the client's pongs and its close come in among them (a session that stopped reading was closed at the next ping
        // it could not see answered: a quiet `kubectl exec` died after 60 s).
        let stdinTask = Task {
            var open = exec.stdin || exec.tty
            defer {
                if open { close(stdinFD) }
                sized.continuation.finish()
            }
            do {
                for try await message in inbound.messages(maxSize: 1 << 20) {
                    guard open, let (channel, bytes) = Self.channelMessage(message) else { continue }
                    if channel == 255 {
                        close(stdinFD)
                        open = false
                        continue
                    }
                    if channel == 4, exec.tty, let size = try? JSON.parse(bytes),
                       let width = size["Width"]?.int.flatMap(UInt16.init(exactly:)), let height = size["Height"]?.int.flatMap(UInt16.init(exactly:)) {
                        Terminal.setSize(stdinFD, rows: height, columns: width)
                        sized.continuation.finish()
                    }
                    guard channel == 0, exec.stdin else { continue }
                    if !Self.writeAll(stdinFD, bytes) {
                        close(stdinFD)
                        open = false
                    }
                }
            } catch {}
        }
        if exec.tty {
            // kubectl sends the terminal's size first thing: the command starts at that size
            // (`tty; stty size`, an editor's first screen), waiting for it at most 1 s.
            await withTaskGroup(of: Void.self) { wait in
                wait.addTask { for await _ in sized.stream {} }
                wait.addTask { try? await Task.sleep(for: .seconds(1)) }
                await wait.next()
                wait.cancelAll()
            }
        }
        let exited = AsyncStream<ProcessExit>.makeStream()
        do {
            _ = try ProcessReaper.shared.spawn(exec.command, options) { exited.continuation.yield($0); exited.continuation.finish() }
        } catch {
            stdinTask.cancel()  // it closes stdin's end when the session ends
            for fd in pipes.joined() where fd != stdinFD || !(exec.stdin || exec.tty) { close(fd) }
            let message = (error as? SystemError)?.errno == ENOENT
                ? "exec: \"\(exec.command[0])\": executable file not found in $PATH" : "\(error)"
            return await out.finish(APIError(code: 500, reason: "InternalError", message: message).status)
        }
        close(pipes[0][0]); close(pipes[1][1]); close(pipes[2][1])
        if !exec.stdin && !exec.tty { close(stdinFD) }
        let output = AsyncStream<(UInt8, [UInt8])>.makeStream()
        let readers = [(UInt8(1), pipes[1][0]), (UInt8(2), pipes[2][0])].filter { $0.1 >= 0 }
        let group = DispatchGroup()
        for (channel, fd) in readers {
            group.enter()
            DispatchQueue.global().async {
                var buffer = [UInt8](repeating: 0, count: 32 << 10)
                while true {
                    let n = read(fd, &buffer, buffer.count)
                    if n <= 0 { break }
                    output.continuation.yield((channel, Array(buffer[..<n])))
                }
                close(fd)
                group.leave()
            }
        }
        group.notify(queue: .global()) { output.continuation.finish() }
        for await (channel, bytes) in output.stream { await out.send(channel, bytes) }
        var exit: ProcessExit = .exited(0)
        for await e in exited.stream { exit = e }
        stdinTask.cancel()
        if exit == .exited(0) {
            await out.finish(["metadata": [:], "status": "Success"])
        } else {
            let code = exit.shellCode
            await out.finish([
                "metadata": [:], "status": "Failure",
                "message": .string("command terminated with non-zero exit code: error executing command [\(exec.command.joined(separator: " "))], exit code \(code)"),
                "reason": "NonZeroExitCode",
                "details": ["causes": [["reason": "ExitCode", "message": .string(String(code))]]],
            ])
        }
    }
}

/// The server's side of the channel protocol (exec, attach): each message a channel byte and its
/// bytes; the session ends with a Status on channel 3 (the error channel) and a close.
struct ChannelStream {
    let outbound: WebSocketOutboundWriter
    /// kubectl 1.32 starts reading before it has made its streams (kubernetes#131189, fixed in
    /// client-go 1.33): a message in its first moments is dropped ("Unknown stream id 1") and the
    /// session fails. A quick command's output waits until the session is this old: 50 ms was too
    /// little once, on a loaded 2-core CI machine running nine `kubectl exec` at a time (one lost
    /// its command's whole output); a real cluster's exec takes longer than this to start anyway.
    static let settle = Duration.milliseconds(200)
    let opened = ContinuousClock.now

    func send(_ channel: UInt8, _ bytes: some Sequence<UInt8>) async {
        let early = opened + Self.settle - ContinuousClock.now
        if early > .zero { try? await Task.sleep(for: early) }
        var buffer = ByteBuffer(bytes: [channel])
        buffer.writeBytes(bytes)
        try? await outbound.write(.binary(buffer))
    }

    func finish(_ status: JSON) async {
        await send(3, status.bytes())
        try? await outbound.close(.normalClosure, reason: nil)
    }
}

extension PodExec {
    /// A channel protocol message: its first byte the channel, the rest the bytes. Text frames
    /// count as well as binary ones (the python client writes a str to stdin as text), as
    /// upstream's stream server reads either.
    /// Writes all of `bytes` to `fd` (a pipe, a terminal or a socket); false once it fails.
    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            let written = n >= 0 || errno != ENOTSOCK ? n : bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written <= 0 { return false }
            offset += written
        }
        return true
    }

    static func channelMessage(_ message: WebSocketMessage) -> (UInt8, [UInt8])? {
        let bytes: [UInt8]
        switch message {
        case .binary(let buffer): bytes = Array(buffer.readableBytesView)
        case .text(let text): bytes = Array(text.utf8)
        }
        guard let channel = bytes.first else { return nil }
        return (channel, Array(bytes.dropFirst()))
    }
}

/// `/api/v1/namespaces/NS/pods/NAME/exec?command=sh&command=-c&…&stdin=true&container=c`, or
/// `…/attach?stdin=true&stdout=true&container=c`.
struct ExecRequest: Sendable {
    var namespace: String
    var pod: String
    var attach: Bool
    var container: String?
    var command: [String]
    var stdin: Bool
    /// `tty=true` (kubectl -t): the command runs on a terminal of its own.
    var tty: Bool

    init?(_ target: String) {
        let parts = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = (parts.first ?? "").split(separator: "/").map(String.init)
        guard path.count == 7, path[0] == "api", path[1] == "v1", path[2] == "namespaces", path[4] == "pods",
              path[6] == "exec" || path[6] == "attach" else { return nil }
        attach = path[6] == "attach"
        namespace = path[3]
        pod = path[5]
        var command: [String] = []
        var container: String?
        var stdin = false
        var tty = false
        for pair in (parts.count > 1 ? parts[1] : "").split(separator: "&") {
            // Form decoding in one pass: kubectl sends a "+" in a command as %2B, and a space as "+".
            let kv = pair.split(separator: "=", maxSplits: 1).map(Query.decode)
            let value = kv.count > 1 ? kv[1] : ""
            switch kv[0] {
            case "command": command.append(value)
            case "container": container = value
            case "stdin": stdin = ["true", "1", "True"].contains(value)
            case "tty": tty = ["true", "1", "True"].contains(value)
            default: break
            }
        }
        self.command = command
        self.container = container
        self.stdin = stdin
        self.tty = tty
    }
}
