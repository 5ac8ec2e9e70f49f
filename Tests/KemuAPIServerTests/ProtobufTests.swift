import Foundation
import KemuAPI
@testable import KemuAPIServer
import Testing

/// Bodies written the way Go's encoder writes them: every value field, zeros included.
struct Wire {
    var bytes: [UInt8] = []

    mutating func key(_ field: Int, _ type: UInt64) { varint(UInt64(field) << 3 | type) }
    mutating func varint(_ v: UInt64) {
        var v = v
        while v >= 0x80 { bytes.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        bytes.append(UInt8(v))
    }
    mutating func int(_ field: Int, _ v: Int64) { key(field, 0); varint(UInt64(bitPattern: v)) }
    mutating func data(_ field: Int, _ b: [UInt8]) { key(field, 2); varint(UInt64(b.count)); bytes += b }
    mutating func string(_ field: Int, _ s: String) { data(field, Array(s.utf8)) }
    mutating func message(_ field: Int, _ body: (inout Wire) -> Void) {
        var inner = Wire()
        body(&inner)
        data(field, inner.bytes)
    }

    /// The k8s envelope around an object of `kind`.
    static func envelope(_ apiVersion: String, _ kind: String, _ body: (inout Wire) -> Void) -> [UInt8] {
        var unknown = Wire()
        unknown.message(1) { $0.string(1, apiVersion); $0.string(2, kind) }
        unknown.message(2, body)
        return Protobuf.magic + unknown.bytes
    }
}

@Suite struct ProtobufTests {
    func deployment(status: (inout Wire) -> Void = { _ in }, extra: (inout Wire) -> Void = { _ in }) -> [UInt8] {
        Wire.envelope("apps/v1", "Deployment") { d in
            d.message(1) { m in
                m.string(1, "web")
                m.message(8) { _ in }  // creationTimestamp: Go's zero time
                m.message(11) { $0.string(1, "app"); $0.string(2, "web") }
            }
            d.message(2) { s in
                s.int(1, 0)  // replicas: a pointer, so 0 is kept
                s.message(3) { t in
                    t.message(2) { p in
                        p.message(2) { c in
                            c.string(1, "echo")
                            c.string(2, "kemu/echo")
                            c.message(6) { $0.string(1, ""); $0.int(2, 0); $0.int(3, 8080); $0.string(4, "TCP") }
                            c.message(10) { probe in
                                probe.message(1) { $0.message(2) { $0.string(1, "/healthz"); $0.message(2) { $0.int(1, 1); $0.string(3, "http") } } }
                                probe.int(2, 0)
                                probe.int(4, 5)
                            }
                            c.int(16, 0)  // stdin false: a value field, left out
                        }
                        p.message(1) { v in v.string(1, "scratch"); v.message(2) { $0.message(2) { $0.string(1, "") } } }
                    }
                }
                extra(&s)
            }
            d.message(3, status)
        }
    }

    @Test func aDeploymentReadsAsKubectlMeansIt() throws {
        let o = try Protobuf.decode(deployment { s in s.int(1, 0); s.int(2, 0) })
        #expect(o["kind"]?.string == "Deployment" && o["apiVersion"]?.string == "apps/v1")
        #expect(o.name == "web" && o.labels == ["app": "web"])
        #expect(o[path: "metadata.creationTimestamp"] == nil)
        #expect(o[path: "spec.replicas"]?.int == 0)
        let container = o[path: "spec.template.spec.containers"]?.array?.first
        #expect(container?["ports"] == [["containerPort": 8080, "protocol": "TCP"]])
        #expect(container?["stdin"] == nil)
        // The probe's handler is inlined, as in JSON; a named port is a string.
        #expect(container?["livenessProbe"] == ["httpGet": ["path": "/healthz", "port": "http"], "periodSeconds": 5])
        // The volume source is inlined; an empty emptyDir is kept, since it says what the volume is.
        #expect(o[path: "spec.template.spec.volumes"] == [["name": "scratch", "emptyDir": [:]]])
        #expect(o["status"] == nil)
    }

    @Test func whatKemuCannotReadIsRefusedNamingIt() throws {
        let unknown = #expect(throws: APIError.self) { try Protobuf.decode(deployment(extra: { $0.int(42, 7) })) }
        #expect(unknown?.code == 415 && unknown?.message.contains("field 42 of DeploymentSpec (Deployment.spec)") == true, "\(String(describing: unknown))")
        // An unknown field with Go's zero value says nothing, and is passed over.
        #expect(try Protobuf.decode(deployment(extra: { $0.int(42, 0) }))[path: "spec.replicas"]?.int == 0)
        // A status that says something is not dropped silently.
        let status = #expect(throws: APIError.self) { try Protobuf.decode(deployment(status: { $0.int(2, 3) })) }
        #expect(status?.code == 415 && status?.message.contains("Deployment.status") == true)
        let kind = #expect(throws: APIError.self) { try Protobuf.decode(Wire.envelope("v1", "PodSpec") { _ in }) }
        #expect(kind?.code == 415 && kind?.message.contains("\"PodSpec\"") == true)
    }

    @Test func wrongWireTypesAndBadTextAreBadRequests() throws {
        let wrongType = Wire.envelope("v1", "ConfigMap") { $0.int(2, 5) }  // data is a map, sent as a varint
        #expect((#expect(throws: APIError.self) { try Protobuf.decode(wrongType) })?.code == 400)
        let notUTF8 = Wire.envelope("v1", "ConfigMap") { $0.message(1) { $0.data(1, [0xFF, 0xFE]) } }
        #expect((#expect(throws: APIError.self) { try Protobuf.decode(notUTF8) })?.code == 400)
        let farTime = Wire.envelope("v1", "Namespace") { $0.message(1) { $0.message(8) { $0.int(1, Int64.max) } } }
        #expect((#expect(throws: APIError.self) { try Protobuf.decode(farTime) })?.code == 400)
    }

    @Test func secretsAndConfigMapsKeepTheirBytes() throws {
        let secret = try Protobuf.decode(Wire.envelope("v1", "Secret") { s in
            s.message(1) { $0.string(1, "creds") }
            s.message(2) { $0.string(1, "key"); $0.data(2, [0, 1, 0xFF]) }
            s.string(3, "Opaque")
            s.int(5, 0)  // immutable: a pointer, so false is kept
        })
        #expect(secret["data"] == ["key": "AAH/"])
        #expect(secret["type"]?.string == "Opaque" && secret["immutable"] == false)
    }
}

/// events.k8s.io/v1's Event has its own field numbers: read by its apiVersion, not as a core one.
@Suite struct EventsV1Tests {
    @Test func aV1EventReadsByItsOwnNumbersAndConvertsBothWays() throws {
        let body = Wire.envelope("events.k8s.io/v1", "Event") { e in
            e.message(1) { $0.string(1, "e1"); $0.string(3, "default") }
            e.string(4, "example.com/ctl")
            e.string(7, "Checked")
            e.message(8) { $0.string(1, "Pod"); $0.string(3, "p") }
            e.string(10, "hello")
            e.string(11, "Normal")
        }
        let v1 = try Protobuf.decode(body)
        #expect(v1["note"]?.string == "hello" && v1[path: "regarding.name"]?.string == "p" && v1["reportingController"]?.string == "example.com/ctl")
        let core = EventsV1.inward(v1)
        #expect(core["apiVersion"]?.string == "v1" && core["message"]?.string == "hello" && core[path: "involvedObject.kind"]?.string == "Pod")
        #expect(core["reportingComponent"]?.string == "example.com/ctl" && core["note"] == nil)
        var expected = v1
        expected["apiVersion"] = "events.k8s.io/v1"
        expected["eventTime"] = .null
        #expect(EventsV1.outward(core) == expected)
    }
}
