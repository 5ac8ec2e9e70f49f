import Foundation
import KemuAPI
import KemuClient
import KemuIP
import KemuSystem
import Synchronization
import Testing

@testable import KemuProxy

/// One log for the fake backend and the fake `lo`, so the order of what the proxy did is visible.
final class CallLog: Sendable {
    let lines = Mutex<[String]>([])
    /// Addresses whose listen fails (the next `n` times; Int.max: always).
    let failingListens = Mutex<[SocketAddress: Int]>([:])
    func add(_ line: String) { lines.withLock { $0.append(line) } }
    func take() -> [String] { lines.withLock { l in defer { l.removeAll() }; return l } }
}

struct FakeBackend: ProxyBackend {
    let log: CallLog
    func setPool(_ name: String, _ settings: PoolSettings, _ endpoints: [EndpointSpec]) {
        log.add("setPool \(name) " + endpoints.map(\.address.description).sorted().joined(separator: ","))
    }
    func removePool(_ name: String) { log.add("removePool \(name)") }
    func route(_ address: FrontendAddress, _ frontend: Frontend) { log.add("route \(address) \(frontend.pool)") }
    func unlisten(_ address: FrontendAddress) { log.add("unlisten \(address)") }
    func commit() { log.add("commit") }
    func listen(_ address: FrontendAddress, _ frontend: Frontend) throws {
        let fail = log.failingListens.withLock { f -> Bool in
            guard let n = f[address.address], n > 0 else { return false }
            f[address.address] = n == Int.max ? n : n - 1
            return true
        }
        log.add((fail ? "listen-failed " : "listen ") + address.description)
        if fail { throw KemuError(.exists, "bind \(address): Address already in use") }
    }
}

struct FakeLoopback: LocalAddresses {
    let log: CallLog
    func add(_ ip: IPv4Address) throws { log.add("lo add \(ip)") }
    func remove(_ ip: IPv4Address) throws { log.add("lo remove \(ip)") }
    func list() throws -> [IPv4Address] { [] }
    func addRange(_ network: IPv4Network) throws {}
}

@Suite struct ServiceProxySyncTests {
    static let web = ServiceKey(namespace: "default", name: "web")

    static func service(externalIP: String? = "172.31.2.5") -> JSON {
        ServicePlanTests.service(extra: externalIP.map { ["externalIPs": [.string($0)]] } ?? [:])
    }

    static func slice(_ name: String = "web-abc", service: String? = "web", ips: [String] = ["10.244.2.7"], trigger: Date? = nil) -> JSON {
        var s = ServicePlanTests.slice(ips.map { ServicePlanTests.endpoint($0, node: "node-2") })
        s.name = name
        if let service { s.labels = ["kubernetes.io/service-name": service] }
        if let trigger { s["metadata", default: [:]]["annotations"] = ["endpoints.kubernetes.io/last-change-trigger-time": .string(Timestamp.formatNano(trigger))] }
        return s
    }

    static func proxy(_ log: CallLog, tune: (inout ProxyConfig) -> Void = { _ in }) throws -> ServiceProxy {
        var config = ProxyConfig(context: ServicePlanTests.context)
        config.localRanges = [IPv4Network("10.96.0.0/16")!]
        tune(&config)
        return try ServiceProxy(config: config, client: APIClient(server: "http://127.0.0.1:1"), addresses: FakeLoopback(log: log),
                                backend: FakeBackend(log: log))
    }

    static func synced(_ proxy: ServiceProxy) {
        proxy.event(.services, .synced)
        proxy.event(.slices, .synced)
        for resource in ServiceProxy.routeResources { proxy.event(.routes(resource.kind), .synced) }
    }

    @Test func aServiceComesWithItsAddressFirstAndGoesWithItLast() throws {
        let log = CallLog()
        let proxy = try Self.proxy(log)
        proxy.event(.services, .added(Self.service()))
        proxy.event(.slices, .added(Self.slice()))
        #expect(proxy.sync(), "nothing is applied before both informers have listed")
        #expect(log.take().isEmpty)
        Self.synced(proxy)
        #expect(proxy.sync())
        // The external IP goes on lo before anything listens on it; the ClusterIP's range is local already.
        #expect(log.take() == ["lo add 172.31.2.5", "setPool default/web:http 10.244.2.7:8080",
                               "listen 10.96.0.20:80", "listen 172.31.2.5:80", "commit"])
        #expect(proxy.listening.map(\.description) == ["10.96.0.20:80", "172.31.2.5:80"])

        // An endpoint more: the pool changes, nothing else.
        proxy.event(.slices, .updated(old: Self.slice(), new: Self.slice(ips: ["10.244.2.7", "10.244.2.8"])))
        #expect(proxy.sync())
        #expect(log.take() == ["setPool default/web:http 10.244.2.7:8080,10.244.2.8:8080", "commit"])

        // Gone: listeners close, the pool goes, and the address leaves lo only after the batch.
        proxy.event(.services, .deleted(Self.service()))
        #expect(proxy.sync())
        #expect(log.take() == ["unlisten 10.96.0.20:80", "unlisten 172.31.2.5:80", "removePool default/web:http", "commit", "lo remove 172.31.2.5"])
        #expect(proxy.listening.isEmpty)
    }

    @Test func anAddressSharedByTwoServicesStaysUntilTheLastGoes() throws {
        let log = CallLog()
        let proxy = try Self.proxy(log)
        Self.synced(proxy)
        var api = Self.service()
        api.name = "api"
        api["spec", default: [:]]["clusterIP"] = "10.96.0.21"
        api["spec", default: [:]]["clusterIPs"] = ["10.96.0.21"]
        api["spec", default: [:]]["ports"] = [["name": "http", "port": 81]]
        proxy.event(.services, .added(Self.service()))
        proxy.event(.services, .added(api))
        #expect(proxy.sync())
        #expect(log.take().filter { $0.hasPrefix("lo") } == ["lo add 172.31.2.5"])
        proxy.event(.services, .deleted(Self.service()))
        #expect(proxy.sync())
        #expect(log.take().filter { $0.hasPrefix("lo") }.isEmpty)
        proxy.event(.services, .deleted(api))
        #expect(proxy.sync())
        #expect(log.take().filter { $0.hasPrefix("lo") } == ["lo remove 172.31.2.5"])
    }

    /// The test: a listen that fails once is retried by the runner, without any further
    /// change to the Service, and the Service is served.
    @Test func aFailedListenIsRetriedUntilItWorks() async throws {
        let log = CallLog()
        let taken = SocketAddress(IPv4Address("10.96.0.20")!, 80)
        log.failingListens.withLock { $0[taken] = 1 }
        let proxy = try Self.proxy(log) { $0.retryInterval = .milliseconds(50) }
        // Both changes are in before the runner starts, so its first sync has them together (on
        // a loaded machine a runner already going could sync between them and set the pool twice).
        Self.synced(proxy)
        proxy.event(.services, .added(Self.service(externalIP: nil)))
        proxy.event(.slices, .added(Self.slice()))
        let runner = Task { await proxy.runner.run { proxy.sync() } }
        defer { runner.cancel() }
        let served = await eventually(60) { proxy.listening.contains(FrontendAddress(taken)) }
        #expect(served, "\(log.lines.withLock { $0 })")
        let calls = log.take()
        #expect(calls.filter { $0.hasPrefix("listen") } == ["listen-failed 10.96.0.20:80", "listen 10.96.0.20:80"])
        // The pool was set once: the retry redoes only what is missing.
        #expect(calls.filter { $0.hasPrefix("setPool") }.count == 1)
        #expect(proxy.health().healthy)
    }

    /// The test: /healthz answers 200 while syncs succeed and 503 once the last successful
    /// one is older than the maximum interval plus the grace: syncs stopped, or keep failing.
    @Test func healthzGoes503WhenSyncsStop() async throws {
        let log = CallLog()
        let proxy = try Self.proxy(log) { ($0.maxSyncInterval, $0.healthGrace) = (.milliseconds(700), .milliseconds(700)) }
        let status = { await ProxyStatusServer.respond(proxy, path: "/healthz").0.code }
        #expect(await status() == 503, "before the first sync")
        Self.synced(proxy)
        #expect(proxy.sync())
        #expect(await status() == 200)
        let body = await ProxyStatusServer.respond(proxy, path: "/healthz").2
        #expect(body.contains("\"lastUpdated\":\"20"), "\(body)")
        // No sync since: unhealthy once the last one is older than 0.7 s + 0.7 s.
        let last = try #require(proxy.health().lastSuccess)
        #expect(proxy.health(now: last.addingTimeInterval(1.3)).healthy)
        #expect(!proxy.health(now: last.addingTimeInterval(1.5)).healthy)
        try await Task.sleep(for: .milliseconds(1500))
        #expect(await status() == 503, "syncs stopped")
        #expect(proxy.sync(), "a quiet sync succeeds too")
        #expect(await status() == 200)

        // Syncs that keep failing do not count: unhealthy too, healthy again when one succeeds.
        let taken = SocketAddress(IPv4Address("10.96.0.20")!, 80)
        log.failingListens.withLock { $0[taken] = Int.max }
        proxy.event(.services, .added(Self.service(externalIP: nil)))
        let before = try #require(proxy.health().lastSuccess)
        #expect(!proxy.sync())
        #expect(!proxy.sync(), "the failed Service is tried again")
        #expect(proxy.health().lastSuccess == before)
        #expect(!proxy.health(now: before.addingTimeInterval(1.5)).healthy)
        #expect(log.take().filter { $0 == "listen-failed 10.96.0.20:80" }.count == 2)
        log.failingListens.withLock { $0[taken] = 0 }
        #expect(proxy.sync())
        #expect(proxy.listening.contains(FrontendAddress(taken)))
        #expect(await status() == 200)
    }

    @Test func changesUndoneBeforeTheSyncAreNoChange() {
        var t = ServiceChangeTracker()
        t.apply(service: .synced)
        t.apply(slice: .synced)
        t.apply(service: .added(Self.service()))
        #expect(t.checkout().changes.map(\.key) == [Self.web])
        // A slice that came and went, an update that restored the object: nothing to do.
        t.apply(slice: .added(Self.slice()))
        t.apply(slice: .deleted(Self.slice()))
        t.apply(service: .updated(old: Self.service(), new: Self.service(externalIP: nil)))
        t.apply(service: .updated(old: Self.service(externalIP: nil), new: Self.service()))
        #expect(t.hasPending)
        #expect(t.checkout().changes.isEmpty)
        // A real change carries what it was and what it is.
        t.apply(slice: .added(Self.slice()))
        let change = t.checkout().changes.first
        #expect(change?.previous.slices.isEmpty == true && t.inputs(Self.web).slices.count == 1)
        // Forced (after a failed apply): planned again though nothing changed.
        t.force([Self.web])
        #expect(t.checkout().changes.map(\.key) == [Self.web])
    }

    @Test func slicesFollowTheirLabelAndStubDeletesFindTheirService() {
        var t = ServiceChangeTracker()
        let api = ServiceKey(namespace: "default", name: "api")
        t.apply(slice: .added(Self.slice(service: "web")))
        _ = t.checkout()
        // Relabelled to another Service: it leaves the first, and both change.
        t.apply(slice: .updated(old: Self.slice(service: "web"), new: Self.slice(service: "api")))
        #expect(t.index.slices[Self.web] == nil && t.index.slices[api]?["web-abc"] != nil)
        #expect(t.checkout().changes.map(\.key) == [api, Self.web])
        // A re-list's delete is a stub without labels: the slice still leaves the right Service.
        var stub: JSON = [:]
        (stub.namespace, stub.name) = ("default", "web-abc")
        t.apply(slice: .deleted(stub))
        #expect(t.index.slices[api] == nil && t.index.sliceCount == 0)
        #expect(t.checkout().changes.map(\.key) == [api])
    }

    @Test func triggerTimesFromBeforeTheProxyStartedAreIgnored() {
        let start = Date()
        var t = ServiceChangeTracker(startedAt: start)
        t.apply(slice: .added(Self.slice("old", trigger: start.addingTimeInterval(-3600))))
        #expect(t.checkout().triggers.isEmpty, "a restarted proxy must not count an hour-old change as its programming latency")
        let fresh = start.addingTimeInterval(0.5)
        t.apply(slice: .added(Self.slice("new", trigger: fresh)))
        let triggers = t.checkout().triggers
        #expect(triggers[Self.web].map { abs($0.timeIntervalSince(fresh)) < 0.001 } == true)
    }
}

@Suite struct BoundedFrequencyRunnerTests {
    final class Counter: Sendable {
        let runs = Mutex<[ContinuousClock.Instant]>([])
        let fail = Atomic<Int>(0)
        func sync() -> Bool {
            runs.withLock { $0.append(.now) }
            return fail.wrappingSubtract(1, ordering: .relaxed).oldValue <= 0
        }
        var count: Int { runs.withLock { $0.count } }
    }

    @Test func burstsOfRequestsCoalesceAndSyncsKeepTheMinimumInterval() async throws {
        let runner = BoundedFrequencyRunner(.init(min: .milliseconds(100), max: .seconds(10), retry: .seconds(10)))
        let counter = Counter()
        let task = Task { await runner.run { counter.sync() } }
        defer { task.cancel() }
        for _ in 0..<50 { runner.request() }
        #expect(await eventually(60) { counter.count >= 1 })
        for _ in 0..<50 { runner.request() }
        #expect(await eventually(60) { counter.count >= 2 })
        try await Task.sleep(for: .milliseconds(300))
        let runs = counter.runs.withLock { $0 }
        // The first request runs at once; what came after it (the rest of its burst, the second
        // burst) is covered by at most two more syncs, each a minimum interval after the last.
        #expect((2...3).contains(runs.count), "100 requests, \(runs.count) syncs")
        #expect(zip(runs, runs.dropFirst()).allSatisfy { $0.duration(to: $1) >= .milliseconds(99) })
    }

    @Test func slowSyncsSpaceThemselvesOut() async throws {
        // Each sync takes 20 ms; with busy 5 the next may start no sooner than 100 ms after.
        let runner = BoundedFrequencyRunner(.init(min: .milliseconds(1), max: .seconds(10), retry: .seconds(10), busy: 5))
        let runs = Mutex<[ContinuousClock.Instant]>([])
        let task = Task {
            await runner.run {
                runs.withLock { $0.append(.now) }
                try? await Task.sleep(for: .milliseconds(20))
                return true
            }
        }
        defer { task.cancel() }
        let feeding = Task { while !Task.isCancelled { runner.request(); try? await Task.sleep(for: .milliseconds(2)) } }
        defer { feeding.cancel() }
        #expect(await eventually(60) { runs.withLock { $0.count } >= 4 })
        let seen = runs.withLock { $0 }
        // Start to start: the 20 ms sync and a gap of 5 × its duration.
        #expect(zip(seen, seen.dropFirst()).allSatisfy { $0.duration(to: $1) >= .milliseconds(115) }, "\(zip(seen, seen.dropFirst()).map { $0.duration(to: $1) })")
    }

    @Test func withNoRequestItStillSyncsEveryMaximumInterval() async throws {
        let runner = BoundedFrequencyRunner(.init(min: .milliseconds(1), max: .milliseconds(50), retry: .seconds(10)))
        let counter = Counter()
        let began = ContinuousClock.now
        let task = Task { await runner.run { counter.sync() } }
        #expect(await eventually(60) { counter.count >= 4 })
        task.cancel()
        await task.value
        let runs = counter.runs.withLock { $0 }
        #expect(zip(runs, runs.dropFirst()).allSatisfy { $0.duration(to: $1) >= .milliseconds(49) }, "one per 50 ms, no faster")
        #expect(began.duration(to: runs[0]) >= .milliseconds(49), "the first waits for a request or the interval")
    }

    @Test func aFailedSyncIsRetriedWithoutARequest() async throws {
        let runner = BoundedFrequencyRunner(.init(min: .milliseconds(1), max: .seconds(10), retry: .milliseconds(30)))
        let counter = Counter()
        counter.fail.store(2, ordering: .relaxed)
        let task = Task { await runner.run { counter.sync() } }
        defer { task.cancel() }
        runner.request()
        #expect(await eventually(60) { counter.count == 3 })
        try await Task.sleep(for: .milliseconds(150))
        #expect(counter.count == 3, "after the success it waits for a request (or the maximum interval)")
    }

    @Test func cancellingStopsItPromptly() async throws {
        let runner = BoundedFrequencyRunner(.init(min: .milliseconds(1), max: .seconds(60), retry: .seconds(60)))
        let task = Task { await runner.run { true } }
        try await Task.sleep(for: .milliseconds(20))
        let began = ContinuousClock.now
        task.cancel()
        await task.value
        // (Well short of the 60 s interval; 12 s once in a full run, when root suites' synchronous
        // `kemu down` in their defers held both of the pool's threads.)
        #expect(began.duration(to: .now) < .seconds(30), "not after the 60 s interval")
    }
}

/// Polls until `check` holds or `seconds` pass.
func eventually(_ seconds: Double, _ check: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if try await check() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return try await check()
}
