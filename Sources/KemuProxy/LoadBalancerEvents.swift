import Foundation
import KemuAPI
import KemuClient
import Logging
import Synchronization

/// The cloud load balancer's events, as a cloud controller posts them: a LoadBalancer Service the
/// allocator could give no address (the pool is used up) gets a warning; one that is served, a
/// normal event. Each once per change of state.
final class LoadBalancerEvents: Sendable {
    let client: APIClient
    /// The pool, for the message.
    let pool: String
    let logger: Logger
    /// The last reason reported per Service.
    private let reported = Mutex<[ServiceKey: String]>([:])

    init(client: APIClient, pool: String, logger: Logger) {
        self.client = client
        self.pool = pool
        self.logger = logger
    }

    /// `services`: each changed Service (nil: gone) and whether a plan now serves it.
    func report(_ services: [(ServiceKey, ServiceInfo?, served: Bool)]) {
        let pool = self.pool.isEmpty ? "" : " \(self.pool)"
        let due: [(ServiceInfo, String, String, String)] = reported.withLock { reported in
            services.compactMap { key, service, served in
                guard let service, service.type == "LoadBalancer" else {
                    reported[key] = nil
                    return nil
                }
                let (type, reason, message): (String, String, String)
                if service.loadBalancerIPs.isEmpty {
                    (type, reason, message) = ("Warning", "SyncLoadBalancerFailed",
                                               "no free address in the load-balancer pool\(pool): the Service stays pending until an address is released and the Service is updated")
                } else if served {
                    (type, reason, message) = ("Normal", "EnsuredLoadBalancer", "Ensured load balancer")
                } else {
                    return nil
                }
                if reported[key] == reason { return nil }
                reported[key] = reason
                return (service, type, reason, message)
            }
        }
        guard !due.isEmpty else { return }
        let now = Timestamp.now()
        let client = self.client, logger = self.logger
        for (service, type, reason, message) in due {
            if type == "Warning" { logger.warning("service \(service.namespace)/\(service.name): \(message)") }
            var object: JSON = [:]
            (object.namespace, object.name, object.uid) = (service.namespace, service.name, service.uid)
            let event = Events.make(for: object, kind: "Service", type: type, reason: reason, message: message, component: "service-controller", at: now)
            Task {
                do { _ = try await client.create(APIResources.events, event) } catch { logger.warning("event \(reason): \(error)") }
            }
        }
    }
}
