import Foundation
import KemuTestSupport
import Testing

/// events.k8s.io/v1 is the core Events under newer names: one object, seen through either API,
/// written through either, watched through either.
extension KubectlTests {
    static let eventV1 = """
    apiVersion: events.k8s.io/v1
    kind: Event
    metadata: {name: checked, namespace: default}
    eventTime: "2026-12-05T05:00:00.000000Z"
    reportingController: example.com/ctl
    reportingInstance: ctl-1
    action: Testing
    reason: Checked
    type: Normal
    note: hello from v1
    regarding: {kind: Pod, name: p, namespace: default}
    """

    @Test func eventsThroughBothAPIs() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        #expect(try server.kubectl(["create", "-f", "-"], stdin: Self.eventV1).out == "event.events.k8s.io/checked created\n")
        #expect(try server.kubectl(["get", "events", "checked", "-o", "jsonpath={.apiVersion} {.message} {.involvedObject.name} {.reportingComponent}"]).out
            == "v1 hello from v1 p example.com/ctl")
        #expect(try server.kubectl(["get", "events.v1.events.k8s.io", "checked", "-o", "jsonpath={.apiVersion} {.note} {.regarding.name}"]).out
            == "events.k8s.io/v1 hello from v1 p")
        // A core Event, as the components write them, listed through the newer API; patched there.
        #expect(try server.kubectl(["create", "-f", "-"], stdin: """
            apiVersion: v1
            kind: Event
            metadata: {name: core, namespace: default}
            involvedObject: {kind: Pod, name: q, namespace: default}
            reason: Started
            message: from core
            type: Normal
            """).code == 0)
        #expect(try server.kubectl(["get", "events.events.k8s.io", "-o", "jsonpath={range .items[*]}{.note};{end}"]).out == "hello from v1;from core;")
        #expect(try server.kubectl(["patch", "events.events.k8s.io", "core", "--type=merge", "-p", #"{"note":"patched"}"#]).code == 0)
        #expect(try server.kubectl(["get", "event", "core", "-o", "jsonpath={.message}"]).out == "patched")
        #expect(try server.kubectl(["get", "events.events.k8s.io", "-o", "jsonpath={.kind} {.apiVersion}"]).out == "List v1")
        #expect(try server.kubectl(["delete", "events.events.k8s.io", "checked"]).code == 0)
        #expect(try server.kubectl(["get", "events", "-o", "name"]).out == "event/core\n")
    }
}
