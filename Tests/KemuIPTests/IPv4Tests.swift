import KemuIP
import Testing

@Suite struct IPv4Tests {
    @Test func parsesDottedQuadsAndRejectsEverythingElse() {
        #expect(IPv4Address("10.244.1.2")?.description == "10.244.1.2")
        #expect(IPv4Address("255.255.255.255")?.value == UInt32.max)
        #expect(IPv4Address("0.0.0.0")?.value == 0)
        #expect(IPv4Address("10.0.100.9"[...])?.description == "10.0.100.9")
        for bad in ["10.244.1", "10.244.1.256", "1.2.3.4.5", "01.2.3.4", "a.b.c.d", "", "1..2.3", " 1.2.3.4", "1.2.3.-4",
                    "1.2.3.4.", ".1.2.3", "1.2.3.00", "1.2.3.0000", "1.2.3.999", "1.2.3.4 ", "١.2.3.4", "1.2.3.4\u{301}", "...", "1.2.3.1000"] {
            #expect(IPv4Address(bad) == nil, "\(bad) should not parse")
        }
    }

    @Test func cidrsRejectHostBitsAndBadLengths() {
        #expect(IPv4Network("10.244.0.0/16")?.size == 65536)
        #expect(IPv4Network("10.244.1.0/16") == nil)
        #expect(IPv4Network("10.244.0.0/33") == nil)
        #expect(IPv4Network("10.244.0.0") == nil)
        #expect(IPv4Network("0.0.0.0/0") == IPv4Network.any)
    }

    @Test func subnetsHostsAndOverlaps() throws {
        let pods = try #require(IPv4Network("10.244.0.0/16"))
        #expect(pods.subnet(3, prefixLength: 24)?.description == "10.244.3.0/24")
        #expect(pods.subnet(256, prefixLength: 24) == nil)
        #expect(pods.host(258)?.description == "10.244.1.2")
        #expect(pods.last.description == "10.244.255.255")
        #expect(pods.overlaps(IPv4Network("10.244.7.0/24")!))
        #expect(IPv4Network("10.96.0.0/12")!.overlaps(pods) == false)
        #expect(IPv4Network("10.0.0.0/8")!.overlaps(pods))
        #expect(IPv4Interface("10.244.1.7/24")?.network.description == "10.244.1.0/24")
    }
}
