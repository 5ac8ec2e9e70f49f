import KemuAgent
import KemuDNS
import KemuProxy
import ServiceLifecycle

// Each node daemon as a swift-service-lifecycle Service: SIGTERM cancels its run loop; the pods
// keep running (as with kubelet and kube-proxy).

/// The node agent as a lifecycle service.
public struct AgentService: Service {
    public let agent: NodeAgent

    public init(agent: NodeAgent) { self.agent = agent }

    public func run() async throws {
        try await cancelWhenGracefulShutdown {
            do { try await agent.run() } catch is CancellationError {}
        }
    }
}

/// The cluster DNS responder as a lifecycle service.
public struct DNSService: Service {
    public let dns: DNSServer

    public init(dns: DNSServer) { self.dns = dns }

    public func run() async throws {
        try await cancelWhenGracefulShutdown {
            do { try await dns.run() } catch is CancellationError {}
        }
    }
}

/// A node's proxy (or the cloud load balancer) as a lifecycle service: SIGTERM closes its
/// listeners and drains the connections under way.
public struct ProxyService: Service {
    public let proxy: ServiceProxy

    public init(proxy: ServiceProxy) { self.proxy = proxy }

    public func run() async throws {
        try await cancelWhenGracefulShutdown {
            do { try await proxy.run() } catch is CancellationError {}
        }
    }
}
