import ServiceLifecycle

/// A node daemon's run loop (the agent, a proxy or the cloud load balancer, the DNS responder) as
/// a swift-service-lifecycle Service: SIGTERM cancels the loop, and each component's own
/// cancellation does the rest (a proxy closes its listeners and drains; the pods keep running, as
/// with kubelet and kube-proxy).
struct DaemonLoop: Service {
    let body: @Sendable () async throws -> Void

    init(_ body: @escaping @Sendable () async throws -> Void) { self.body = body }

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            do { try await body() } catch is CancellationError {}
        }
    }
}
