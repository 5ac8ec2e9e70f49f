@testable import KemuAPI
import Testing

@Suite struct JSONTests {
    let manifest = #"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","labels":{"app":"web"}},"spec":{"replicas":3,"x-unknown":{"kept":[1,2.5,true,null]},"template":{"spec":{"containers":[{"name":"echo","image":"kemu/echo"}]}}}}"#

    @Test func roundTripKeepsOrderAndUnknownFields() throws {
        let json = try JSON.parse(manifest)
        #expect(json.text() == manifest)
        #expect(json[path: "spec.replicas"]?.int == 3)
        #expect(json[path: "spec.x-unknown.kept"]?.array?.count == 4)
        #expect(json.name == "web" && json.labels == ["app": "web"])
    }

    @Test func stringsEscapeAndUnescape() throws {
        let text = #"{"s":"quote \" backslash \\ slash \/ nl \n tab \t ctl \u0001 é \u00e9 emoji \ud83d\ude80"}"#
        let json = try JSON.parse(text)
        #expect(json["s"]?.string == "quote \" backslash \\ slash / nl \n tab \t ctl \u{01} é é emoji 🚀")
        #expect(try JSON.parse(json.text()) == json)
        #expect(json.text().contains(#"\u0001"#))
    }

    @Test func numbers() throws {
        #expect(try JSON.parse("[0,-7,9223372036854775807,1.5,1e3,-2.5E-2]") == [0, -7, .int(Int64.max), 1.5, 1000.0, -0.025])
        #expect(try JSON.parse("1e3").int == 1000)
        #expect(JSON.double(2.0).text() == "2")
    }

    @Test(arguments: [
        ("{\"a\":1,}", 7), ("[01]", 2), ("\"abc", 4), ("{\"a\" 1}", 5), ("[1 2]", 3), ("\"\u{01}\"", 1),
        ("\"\\ud800\"", 7), ("tru", 0), ("{} x", 3), ("", 0), ("-", 1), ("1.", 2), ("\"\\x\"", 3),
    ])
    func malformedInputIsRefusedAtItsOffset(text: String, offset: Int) {
        let error = #expect(throws: InputError.self) { try JSON.parse(text) }
        #expect(error?.offset == offset, "\(text): \(String(describing: error))")
    }

    @Test func deepNestingIsRefusedNotACrash() {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(throws: InputError.self) { try JSON.parse(deep) }
        let ok = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect((try? JSON.parse(ok)) != nil)
    }

    @Test func mutatedDocumentsParseOrFailCleanly() {
        var generator = SystemRandomNumberGenerator()
        let base = Array(manifest.utf8)
        let alphabet = Array(#"{}[]:,"\0123456789.eE-+truefalsenull xu"#.utf8)
        var parsed = 0
        for _ in 0..<3000 {
            var bytes = base
            for _ in 0..<Int.random(in: 1...6, using: &generator) {
                let i = Int.random(in: 0..<bytes.count, using: &generator)
                switch Int.random(in: 0..<3, using: &generator) {
                case 0: bytes[i] = alphabet.randomElement(using: &generator)!
                case 1: bytes.remove(at: i)
                default: bytes.insert(UInt8.random(in: 0...255, using: &generator), at: i)
                }
                if bytes.isEmpty { bytes = [0x30] }
            }
            do {
                let json = try JSON.parse(bytes)
                parsed += 1
                #expect(try JSON.parse(json.bytes()) == json)  // what we print, we read back
            } catch is InputError {
            } catch {
                Issue.record("unexpected error \(error)")
            }
        }
        #expect(parsed > 0)
    }

    @Test func metadataAccessorsWriteInPlace() {
        var o: JSON = ["kind": "Pod"]
        o.name = "web"
        o.namespace = "shop"
        o.labels = ["b": "2", "a": "1"]
        o.resourceVersion = 42
        #expect(o.text() == #"{"kind":"Pod","metadata":{"name":"web","namespace":"shop","labels":{"a":"1","b":"2"},"resourceVersion":"42"}}"#)
        o.labels = [:]
        #expect(o[path: "metadata.labels"] == nil)
    }
}
