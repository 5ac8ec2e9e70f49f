import Foundation
import KemuAPI
import KemuPKI
@testable import KemuMesh
import Testing

/// What a node's proxy makes of the lab's marks on Nodes: revoked serials (every node's) and its
/// own clock skew, and how it then judges a peer's certificate.
@Suite struct MeshTrustTests {
    func node(_ name: String, _ annotations: [String: String]) -> JSON {
        var n: JSON = ["apiVersion": "v1", "kind": "Node"]
        n.name = name
        n.annotations = annotations
        return n
    }

    func certificate(serial: String = "1f", from: TimeInterval = -60, to: TimeInterval = 86_400) -> SVID.Read {
        SVID.Read(id: .workload(domain: "cluster.local", namespace: "shop", serviceAccount: "web"),
                  notBefore: Date().addingTimeInterval(from), notAfter: Date().addingTimeInterval(to), serial: serial)
    }

    @Test func annotationsAreReadStrictly() {
        #expect(Mesh.revokedSerials("1F@1700000000, 0ab ,zz,12@x,@5,").map(\.serial) == ["1f", "ab"])
        #expect(Mesh.revokedSerials("1f@1700000000").first?.expires == 1_700_000_000)
        #expect(Mesh.revokedSerials(String(repeating: "a", count: 41)).isEmpty)
        #expect(Mesh.clockSkew("25h") == 90_000)
        #expect(Mesh.clockSkew("-1h30m") == -5_400)
        #expect(Mesh.clockSkew("+90s") == 90)
        #expect(Mesh.clockSkew("0") == 0)
        for bad in ["", "-", "25", "1y", "h", "99999999h", "--1h", "1h-", "nan"] { #expect(Mesh.clockSkew(bad) == nil, "\(bad)") }
        #expect(SVID.serialText([0, 0, 0x0a, 0xff]) == "aff")
        #expect(SVID.serialText([0, 0]) == "0")
    }

    @Test func revokedSerialsFromEveryNodeAndTheSkewFromItsOwn() {
        let trust = MeshTrust(node: "node-2")
        #expect(trust.refusal(certificate()) == nil)
        #expect(trust.nodeEvent(.added(node("node-1", [Mesh.revokedAnnotation: "1f@4102444800", Mesh.clockSkewAnnotation: "48h"]))))
        // node-1's skew is node-1's: this node's clock is unmoved.
        #expect(trust.skew == 0)
        #expect(trust.refusal(certificate())?.contains("revoked") == true)
        #expect(trust.refusal(certificate(serial: "20")) == nil)
        let generation = trust.generation.load(ordering: .relaxed)
        #expect(!trust.nodeEvent(.updated(old: node("node-1", [:]), new: node("node-1", [Mesh.revokedAnnotation: "1f@4102444800"]))))
        #expect(trust.generation.load(ordering: .relaxed) == generation)

        // Ahead by 25 h: a day's certificate has expired by this clock; behind by 2 h, a new one
        // is not valid yet.
        #expect(trust.nodeEvent(.added(node("node-2", [Mesh.clockSkewAnnotation: "25h"]))))
        #expect(trust.refusal(certificate(serial: "20"))?.contains("expired") == true)
        trust.nodeEvent(.updated(old: node("node-2", [:]), new: node("node-2", [Mesh.clockSkewAnnotation: "-2h"])))
        #expect(trust.refusal(certificate(serial: "20"))?.contains("not valid before") == true)
        trust.nodeEvent(.updated(old: node("node-2", [:]), new: node("node-2", [:])))
        #expect(trust.refusal(certificate(serial: "20")) == nil)
        trust.nodeEvent(.deleted(node("node-1", [:])))
        #expect(trust.refusal(certificate()) == nil && trust.revokedCount == 0)
        // A mark the API would refuse, had it got there, counts as none.
        trust.nodeEvent(.added(node("node-2", [Mesh.clockSkewAnnotation: "soon"])))
        #expect(trust.skew == 0)
    }
}
