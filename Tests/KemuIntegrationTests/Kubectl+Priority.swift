import Foundation
import KemuTestSupport
import Testing

/// Priority admission as upstream's: a pod's spec.priority comes from its PriorityClass, or the
/// globalDefault one; a class that does not exist is refused; controllers' pods alike.
extension KubectlTests {
    @Test func podsTakeTheirPriorityFromTheirClass() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let pod = { (name: String, extra: String) in
            "apiVersion: v1\nkind: Pod\nmetadata: {name: \(name)}\nspec: {\(extra)containers: [{name: c, image: busybox}]}\n"
        }
        #expect(try server.kubectl(["create", "-f", "-"], stdin: pod("plain", "")).code == 0)
        #expect(try server.kubectl(["get", "pod", "plain", "-o", "jsonpath={.spec.priority}/{.spec.preemptionPolicy}"]).out == "0/PreemptLowerPriority")
        #expect(try server.kubectl(["create", "-f", "-"], stdin: pod("critical", "priorityClassName: system-node-critical, ")).code == 0)
        #expect(try server.kubectl(["get", "pod", "critical", "-o", "jsonpath={.spec.priority}"]).out == "2000001000")
        let unknown = try server.kubectl(["create", "-f", "-"], stdin: pod("lost", "priorityClassName: nowhere, "))
        #expect(unknown.code != 0 && unknown.out.contains(#"pods "lost" is forbidden: no PriorityClass with name nowhere was found"#), "\(unknown.out)")
        // A globalDefault class: pods that name none get it, the Deployment's too.
        #expect(try server.kubectl(["create", "priorityclass", "normal", "--value=1000", "--global-default=true"]).code == 0)
        #expect(try server.kubectl(["create", "-f", "-"], stdin: pod("defaulted", "")).code == 0)
        #expect(try server.kubectl(["get", "pod", "defaulted", "-o", "jsonpath={.spec.priorityClassName}/{.spec.priority}"]).out == "normal/1000")
        #expect(try server.kubectl(["create", "deployment", "web", "--image=busybox", "--replicas=1"]).code == 0)
        var seen = ""
        for _ in 0..<100 {
            seen = try server.kubectl(["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].spec.priority}"]).out
            if !seen.isEmpty { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        #expect(seen == "1000")
    }
}
