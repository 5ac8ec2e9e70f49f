import Foundation
import KemuTestSupport
import Testing

/// ResourceQuota as kubectl users meet it: creates past a count or a compute limit are
/// Forbidden with upstream's message, a compute quota makes containers state their requests,
/// and `kubectl get quota` shows used/hard.
extension KubectlTests {
    @Test func quotasRefuseWhatWouldExceedThem() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        #expect(try server.kubectl(["create", "quota", "counts", "--hard=pods=2,services=2"]).code == 0)
        for name in ["p1", "p2"] { #expect(try server.kubectl(["run", name, "--image=busybox"]).code == 0) }
        let third = try server.kubectl(["run", "p3", "--image=busybox"])
        #expect(third.code != 0 && third.out.contains(#"pods "p3" is forbidden: exceeded quota: counts, requested: pods=1, used: pods=2, limited: pods=2"#),
                "\(third.out)")
        // The `kubernetes` Service counts, as upstream's.
        #expect(try server.kubectl(["create", "service", "clusterip", "one", "--tcp=80"]).code == 0)
        let second = try server.kubectl(["create", "service", "clusterip", "two", "--tcp=80"])
        #expect(second.out.contains("exceeded quota: counts, requested: services=1, used: services=2, limited: services=2"), "\(second.out)")
        var table = ""
        for _ in 0..<100 {
            table = try server.kubectl(["get", "quota", "counts", "--no-headers"]).out
            if table.contains("pods: 2/2, services: 2/2") { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        #expect(table.contains("pods: 2/2, services: 2/2"), "\(table)")
        // A pod that is gone frees its count.
        #expect(try server.kubectl(["delete", "pod", "p1", "--grace-period=0", "--force"]).code == 0)
        #expect(try server.kubectl(["run", "p3", "--image=busybox"]).code == 0)

        #expect(try server.kubectl(["create", "namespace", "compute"]).code == 0)
        #expect(try server.kubectl(["create", "quota", "cpu", "-n", "compute", "--hard=requests.cpu=1,limits.memory=1Gi"]).code == 0)
        let pod = { (name: String, cpu: String?) -> String in
            let resources = cpu.map { "resources: {requests: {cpu: \($0)}, limits: {memory: 256Mi}}" } ?? "resources: {}"
            return "apiVersion: v1\nkind: Pod\nmetadata: {name: \(name), namespace: compute}\nspec: {containers: [{name: c, image: busybox, \(resources)}]}\n"
        }
        let bare = try server.kubectl(["apply", "-f", "-"], stdin: pod("bare", nil))
        #expect(bare.out.contains("failed quota: cpu: must specify limits.memory for: c; requests.cpu for: c"), "\(bare.out)")
        #expect(try server.kubectl(["apply", "-f", "-"], stdin: pod("small", "600m")).code == 0)
        let big = try server.kubectl(["apply", "-f", "-"], stdin: pod("big", "500m"))
        #expect(big.out.contains("exceeded quota: cpu, requested: requests.cpu=500m, used: requests.cpu=600m, limited: requests.cpu=1"), "\(big.out)")

        // Controllers are held to it too: a Deployment of 3 in a namespace allowed 2 pods gets 2
        // and says why not the third.
        #expect(try server.kubectl(["create", "namespace", "deploys"]).code == 0)
        #expect(try server.kubectl(["create", "quota", "two", "-n", "deploys", "--hard=pods=2"]).code == 0)
        #expect(try server.kubectl(["create", "deployment", "web", "-n", "deploys", "--image=kemu/echo", "--replicas=3"]).code == 0)
        var events = ""
        for _ in 0..<100 {
            events = try server.kubectl(["get", "events", "-n", "deploys", "--field-selector", "reason=FailedCreate", "-o", "jsonpath={.items[*].message}"]).out
            if events.contains("exceeded quota: two") { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        #expect(events.contains("exceeded quota: two, requested: pods=1, used: pods=2, limited: pods=2"), "\(events)")
        #expect(try server.kubectl(["get", "pods", "-n", "deploys", "-o", "name"]).out.split(separator: "\n").count == 2)
    }

    /// LimitRange: containers get the defaults they do not state, and bounds are held.
    @Test func limitRangesFillInDefaultsAndHoldBounds() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        #expect(try server.kubectl(["create", "namespace", "lr"]).code == 0)
        let applied = try server.kubectl(["apply", "-f", "-"], stdin: """
            apiVersion: v1
            kind: LimitRange
            metadata: {name: sizes, namespace: lr}
            spec:
              limits:
              - type: Container
                default: {cpu: 500m, memory: 256Mi}
                defaultRequest: {cpu: 100m}
                max: {cpu: "1"}
                min: {cpu: 50m}
            """)
        #expect(applied.code == 0, "\(applied.out)")
        #expect(try server.kubectl(["run", "plain", "-n", "lr", "--image=busybox"]).code == 0)
        #expect(try server.kubectl(["get", "pod", "plain", "-n", "lr", "-o", "jsonpath={.spec.containers[0].resources}"]).out
            == #"{"limits":{"cpu":"500m","memory":"256Mi"},"requests":{"cpu":"100m","memory":"256Mi"}}"#)
        let big = try server.kubectl(["apply", "-f", "-"], stdin: """
            apiVersion: v1
            kind: Pod
            metadata: {name: big, namespace: lr}
            spec: {containers: [{name: c, image: busybox, resources: {limits: {cpu: "2"}, requests: {cpu: 10m}}}]}
            """)
        #expect(big.out.contains(#"pods "big" is forbidden: [minimum cpu usage per Container is 50m, but request is 10m, maximum cpu usage per Container is 1, but limit is 2]"#),
                "\(big.out)")
        let bad = try server.kubectl(["apply", "-f", "-"], stdin: """
            apiVersion: v1
            kind: LimitRange
            metadata: {name: upside-down, namespace: lr}
            spec: {limits: [{type: Container, min: {cpu: "2"}, max: {cpu: "1"}}]}
            """)
        #expect(bad.out.contains("spec.limits[0].min[cpu]: Invalid value"), "\(bad.out)")
    }

    /// A server-side apply that creates is admitted as a create: within the namespace's quotas,
    /// with its LimitRange defaults and its ServiceAccount.
    @Test func serverSideApplyCreatesWithinQuotas() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        #expect(try server.kubectl(["create", "quota", "one", "--hard=pods=1"]).code == 0)
        let pod = { (name: String) in "apiVersion: v1\nkind: Pod\nmetadata: {name: \(name)}\nspec: {containers: [{name: c, image: busybox}]}\n" }
        #expect(try server.kubectl(["apply", "--server-side", "-f", "-"], stdin: pod("first")).code == 0)
        let second = try server.kubectl(["apply", "--server-side", "-f", "-"], stdin: pod("second"))
        #expect(second.code != 0 && second.out.contains(#"pods "second" is forbidden: exceeded quota: one, requested: pods=1, used: pods=1, limited: pods=1"#),
                "\(second.out)")
        #expect(try server.kubectl(["get", "pod", "first", "-o", "jsonpath={.spec.serviceAccountName}"]).out == "default")
    }
}
