import Glibc
import KemuSystem

/// Active TCP health checks (a pool's `healthCheckSeconds`): on the engine's once-a-second sweep,
/// each due pool's endpoints get a non-blocking connect; one still pending at the next sweep has
/// failed. Two failures in a row mark an endpoint unhealthy (left out of the choice, unless every
/// endpoint is), one success brings it back.
extension ProxyEngine {
    static let checkFailuresToUnhealthy = 2

    func runHealthChecks() {
        // Checks unanswered since the last sweep (a second) have failed.
        for (fd, check) in checks where check.endpoint.checkStarted != 0 && now &- check.endpoint.checkStarted >= 900_000_000 {
            endHealthCheck(fd, healthy: false)
        }
        for pool in pools.values where pool.settings.healthCheckSeconds > 0 && now >= pool.nextHealthCheck {
            pool.nextHealthCheck = now + UInt64(pool.settings.healthCheckSeconds) * 1_000_000_000 - 100_000_000
            for e in pool.endpoints where e.checkStarted == 0 { startHealthCheck(pool, e) }
        }
    }

    private func startHealthCheck(_ pool: EndpointPool, _ e: Endpoint) {
        let (fd, err) = TCPSocket.connect(to: e.spec.address)
        guard fd >= 0 else { return record(pool, e, healthy: false) }
        if err == 0 {
            TCPSocket.abort(fd)
            return record(pool, e, healthy: true)
        }
        do {
            try epoll.add(fd, events: Epoll.writable | Epoll.failed, token: Token.healthCheck(fd))
        } catch {
            close(fd)
            return
        }
        e.checkStarted = now
        checks[fd] = (pool, e)
    }

    func healthCheckEvent(_ fd: Int32, _ events: UInt32) {
        guard checks[fd] != nil else { return }
        endHealthCheck(fd, healthy: events & Epoll.failed == 0 && TCPSocket.pendingError(fd) == 0)
    }

    /// Closes a check's socket (with a reset: nothing to say goodbye to) and records its outcome
    /// (nil: abandoned).
    func endHealthCheck(_ fd: Int32, healthy: Bool?) {
        guard let check = checks.removeValue(forKey: fd) else { return }
        epoll.remove(fd)
        TCPSocket.setResetOnClose(fd)
        closing.append(fd)
        check.endpoint.checkStarted = 0
        if let healthy { record(check.pool, check.endpoint, healthy: healthy) }
    }

    private func record(_ pool: EndpointPool, _ e: Endpoint, healthy: Bool) {
        guard e.removedAt == 0 else { return }
        if healthy {
            e.healthCheckFailures = 0
            if e.unhealthy {
                e.unhealthy = false
                logger.info("\(pool.name): \(e.spec.address) passes its health check again")
            }
            return
        }
        e.stats.healthChecksFailed += 1
        e.healthCheckFailures += 1
        if e.healthCheckFailures >= Self.checkFailuresToUnhealthy && !e.unhealthy {
            e.unhealthy = true
            logger.info("\(pool.name): \(e.spec.address) failed \(e.healthCheckFailures) health checks; left out until one passes")
        }
    }
}
