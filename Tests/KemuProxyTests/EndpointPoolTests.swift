import KemuIP
import KemuSystem
import Testing

@testable import KemuProxy

@Suite struct EndpointPoolTests {
    static func specs(_ n: Int) -> [EndpointSpec] {
        (0..<n).map { EndpointSpec(SocketAddress(IPv4Address(10, 244, 1, UInt8($0 + 2)), 8080), target: "default/web-\($0 + 1)") }
    }

    static let client = IPv4Address(10, 244, 2, 9)

    func pool(_ n: Int, _ configure: (inout PoolSettings) -> Void = { _ in }) -> EndpointPool {
        var settings = PoolSettings()
        configure(&settings)
        return EndpointPool(name: "default/web", settings: settings, endpoints: Self.specs(n), now: 1)
    }

    @Test func roundRobinVisitsEveryEndpointOncePerTurn() {
        let p = pool(3)
        for _ in 0..<4 {
            let turn = (0..<3).map { _ in p.choose(client: Self.client, tried: [], now: 1)!.spec.address }
            #expect(Set(turn).count == 3)
        }
    }

    @Test func leastConnectionsPrefersTheIdleEndpoint() {
        let p = pool(3) { $0.algorithm = .leastConnections }
        p.endpoints[0].active = 5
        p.endpoints[1].active = 5
        for _ in 0..<10 { #expect(p.choose(client: Self.client, tried: [], now: 1) === p.endpoints[2]) }
        p.endpoints[2].active = 9
        let picks = Set((0..<10).map { _ in p.choose(client: Self.client, tried: [], now: 1)!.spec.address })
        #expect(picks == [p.endpoints[0].spec.address, p.endpoints[1].spec.address])
    }

    @Test func powerOfTwoChoicesAvoidsTheSlowEndpoint() {
        let p = pool(2) { $0.algorithm = .powerOfTwoChoices }
        p.answered(p.endpoints[0], latencyNanoseconds: 50_000_000, now: 1)
        p.answered(p.endpoints[1], latencyNanoseconds: 100_000, now: 1)
        for _ in 0..<20 { #expect(p.choose(client: Self.client, tried: [], now: 2) === p.endpoints[1]) }
    }

    @Test func peakEWMATakesASlowAnswerAtOnceAndForgetsItSlowly() {
        let p = pool(1) { $0.algorithm = .powerOfTwoChoices }
        let e = p.endpoints[0]
        let second: UInt64 = 1_000_000_000
        p.answered(e, latencyNanoseconds: 1_000_000, now: second)
        p.answered(e, latencyNanoseconds: 200_000_000, now: 2 * second)
        #expect(e.latencyEWMA == 200_000_000)  // the peak, at once
        // A fast answer 10 s later (one time constant): about 1/e of the way back, not all.
        p.answered(e, latencyNanoseconds: 1_000_000, now: 12 * second)
        #expect(e.latencyEWMA > 70_000_000 && e.latencyEWMA < 76_000_000, "\(e.latencyEWMA)")
        // Left alone, its cost decays, so it is tried again.
        #expect(EndpointPool.cost(e, now: 72 * second) < EndpointPool.cost(e, now: 12 * second) / 100)
    }

    @Test func clientIPAffinityPinsUntilItExpires() {
        let p = pool(3) { $0.affinitySeconds = 10 }
        let first = p.choose(client: Self.client, tried: [], now: 1)!
        for i in 0..<5 { #expect(p.choose(client: Self.client, tried: [], now: 1 + UInt64(i) * 1_000_000_000) === first) }
        // Another client is not pinned to the same endpoint by the first one's entry.
        let other = p.choose(client: IPv4Address(10, 244, 3, 3), tried: [], now: 2)!
        #expect(p.choose(client: IPv4Address(10, 244, 3, 3), tried: [], now: 3) === other)
        // More than ten idle seconds after its last connection the client is balanced afresh:
        // round robin moves on each time.
        var t = UInt64(4) * 1_000_000_000 + 1
        var picks: [SocketAddress] = []
        for _ in 0..<3 {
            t += 10_000_000_001
            p.expireAffinity(now: t)
            picks.append(p.choose(client: Self.client, tried: [], now: t)!.spec.address)
        }
        #expect(Set(picks).count == 3)
    }

    @Test func aRetryPicksAnEndpointNotYetTriedWhileThereIsOne() {
        let p = pool(3)
        var tried: [Endpoint] = []
        for _ in 0..<3 {
            let e = p.choose(client: Self.client, tried: tried, now: 1)!
            #expect(!tried.contains { $0 === e })
            tried.append(e)
        }
        // Every one tried: the attempts left go to them again.
        #expect(p.choose(client: Self.client, tried: tried, now: 1) != nil)
        #expect(pool(0).choose(client: Self.client, tried: [], now: 1) == nil)
    }

    @Test func consecutiveFailuresEjectWithGrowingTimesAndABoundedShare() {
        let p = pool(4)
        let bad = p.endpoints[0]
        #expect(!p.failed(bad, now: 1))
        #expect(p.failed(bad, now: 1))
        #expect(bad.ejectedUntil == 1 + 1_000_000_000)
        for _ in 0..<8 { #expect(p.choose(client: Self.client, tried: [], now: 2) !== bad) }
        // After the ejection it is tried again; failing again ejects it for twice as long.
        let back = 1 + 1_000_000_001 as UInt64
        #expect(!p.failed(bad, now: back))
        #expect(p.failed(bad, now: back))
        #expect(bad.ejectedUntil == back + 2_000_000_000)
        // Half of 4 may be out at once: a second goes, a third does not.
        #expect(!p.failed(p.endpoints[1], now: back))
        #expect(p.failed(p.endpoints[1], now: back))
        #expect(!p.failed(p.endpoints[2], now: back))
        #expect(!p.failed(p.endpoints[2], now: back))
        #expect(!p.endpoints[2].isEjected(at: back))
    }

    @Test func whenEveryEndpointIsEjectedTheyAreStillTried() {
        let p = pool(1)
        p.failed(p.endpoints[0], now: 1)
        p.failed(p.endpoints[0], now: 1)
        #expect(p.endpoints[0].isEjected(at: 2))
        #expect(p.choose(client: Self.client, tried: [], now: 2) === p.endpoints[0])
    }

    @Test func anUpdateKeepsTheStateOfEndpointsThatStay() {
        let p = pool(3)
        let kept = p.endpoints[1]
        kept.active = 7
        let removed = p.update(settings: p.settings, endpoints: [Self.specs(3)[1], Self.specs(4)[3]], now: 5)
        #expect(removed.count == 2 && removed.allSatisfy { $0.removedAt == 5 })
        #expect(p.endpoints.count == 2)
        #expect(p.endpoints.contains { $0 === kept && $0.active == 7 })
    }

    /// A pod restarted in place leaves its Service (NotReady) and comes back (Ready) at the same
    /// address: ejected when it left, it is still ejected when it is back, until its time is up;
    /// one that left healthy comes back healthy.
    @Test func anEndpointBackBeforeItsEjectionEndsIsStillEjected() {
        let p = pool(3)
        let all = Self.specs(3)
        p.failed(p.endpoints[0], now: 1)
        #expect(p.failed(p.endpoints[0], now: 1))
        let until = p.endpoints[0].ejectedUntil
        p.update(settings: p.settings, endpoints: Array(all[1...]), now: 2)
        p.update(settings: p.settings, endpoints: all, now: 3)
        let back = p.endpoints.first { $0.spec.address == all[0].address }
        #expect(back?.isEjected(at: 4) == true && back?.ejectedUntil == until)
        for _ in 0..<20 { #expect(p.choose(client: Self.client, tried: [], now: 4)?.spec.address != all[0].address) }
        // Gone past its ejection's end, it comes back new.
        p.update(settings: p.settings, endpoints: Array(all[1...]), now: 5)
        p.update(settings: p.settings, endpoints: all, now: until + 1)
        #expect(p.endpoints.first { $0.spec.address == all[0].address }?.isEjected(at: until + 1) == false)
    }

    @Test func dialTimeoutsGrowFrom250Milliseconds() {
        let p = pool(1)
        #expect((0..<4).map { p.dialTimeout(attempt: $0) / 1_000_000 } == [250, 500, 1000, 2000])
    }
}
