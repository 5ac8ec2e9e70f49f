import Foundation
import KemuTestSupport
import Testing

/// The eviction subresource honours PodDisruptionBudgets: an eviction the budget allows spends
/// it; the next one is refused with upstream's 429 and message, which `kubectl drain` retries on.
extension KubectlTests {
    @Test func evictionsSpendTheDisruptionBudget() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        for name in ["web-a", "web-b", "web-c"] {
            #expect(try server.kubectl(["run", name, "--image=kemu/echo", "--labels=app=web"]).code == 0)
            let ready = #"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#
            #expect(try server.kubectl(["patch", "pod", name, "--subresource=status", "--type=merge", "-p", ready]).code == 0)
        }
        #expect(try server.kubectl(["create", "pdb", "web", "--selector=app=web", "--min-available=2"]).out
            == "poddisruptionbudget.policy/web created\n")
        var allowed = ""
        for _ in 0..<100 {
            allowed = try server.kubectl(["get", "pdb", "web", "-o", "jsonpath={.status.disruptionsAllowed}"]).out
            if allowed == "1" { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        #expect(allowed == "1")
        let evict = { (pod: String) throws -> (code: Int32, out: String) in
            let body = #"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"\#(pod)","namespace":"default"}}"#
            let file = server.dataDir + "/eviction-\(pod).json"
            try body.write(toFile: file, atomically: true, encoding: .utf8)
            return try server.kubectl(["create", "--raw", "/api/v1/namespaces/default/pods/\(pod)/eviction", "-f", file])
        }
        #expect(try evict("web-a").code == 0)
        let refused = try evict("web-b")
        #expect(refused.code != 0 && refused.out.contains("Cannot evict pod as it would violate the pod's disruption budget"), "\(refused.out)")
        #expect(try server.kubectl(["get", "pod", "web-b", "-o", "name"]).out == "pod/web-b\n", "a refused eviction deletes nothing")
        #expect(try server.kubectl(["get", "pdb", "web", "--no-headers"]).out.split(separator: " ").filter { !$0.isEmpty }.prefix(4)
            == ["web", "2", "N/A", "0"])
    }
}
