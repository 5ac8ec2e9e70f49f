import Foundation
import KemuAPI
import KemuControllers
import KemuStore
import KemuTestSupport
import Testing

extension KubectlTests {
    @Test func deleteCascadesToOwnedObjectsUnlessOrphaned() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        // The owner is a ConfigMap: a ReplicaSet's own controller would adopt and count the pods.
        let bundle = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {a: b}\n"
        try server.kubectl(["create", "-f", "-"], stdin: bundle)
        let uid = try server.kubectl(["get", "configmap", "web", "-o", "jsonpath={.metadata.uid}"]).out
        func ownedPod(_ name: String) -> String {
            """
            apiVersion: v1
            kind: Pod
            metadata:
              name: \(name)
              labels: {app: web}
              ownerReferences: [{apiVersion: v1, kind: ConfigMap, name: web, uid: \(uid), controller: true}]
            spec: {containers: [{name: echo, image: kemu/echo}]}
            """
        }
        try server.kubectl(["create", "-f", "-"], stdin: ownedPod("web-1"))
        #expect(try server.kubectl(["delete", "configmap", "web", "--cascade=orphan"]).code == 0)
        #expect(try server.kubectl(["get", "pod", "web-1", "-o", "jsonpath={.metadata.ownerReferences}"]).out == "")

        try server.kubectl(["create", "-f", "-"], stdin: bundle)
        let uid2 = try server.kubectl(["get", "configmap", "web", "-o", "jsonpath={.metadata.uid}"]).out
        try server.kubectl(["create", "-f", "-"], stdin: ownedPod("web-2").replacingOccurrences(of: uid, with: uid2))
        #expect(try server.kubectl(["delete", "configmap", "web"]).code == 0)
        var pods = ""
        let deadline = Date().addingTimeInterval(5)
        repeat {
            pods = try server.kubectl(["get", "pods", "-o", "name"]).out
            if pods == "pod/web-1\n" { break }
            usleep(50_000)
        } while Date() < deadline
        #expect(pods == "pod/web-1\n")  // web-2 went with its owner; the orphan stayed

        // Foreground: kubectl waits until the owner is gone, and its pods went first.
        try server.kubectl(["create", "-f", "-"], stdin: bundle)
        let uid3 = try server.kubectl(["get", "configmap", "web", "-o", "jsonpath={.metadata.uid}"]).out
        try server.kubectl(["create", "-f", "-"], stdin: ownedPod("web-3").replacingOccurrences(of: uid, with: uid3))
        let foreground = try server.kubectl(["delete", "configmap", "web", "--cascade=foreground", "--timeout=10s"])
        #expect(foreground.out == "configmap \"web\" deleted\n")
        #expect(try server.kubectl(["get", "configmaps,pods", "--field-selector=metadata.name!=kube-root-ca.crt", "-o", "name"]).out == "pod/web-1\n")
    }

    /// A ReplicaSet deleted with --cascade=orphan leaves its pods every time, though its own
    /// controller would adopt them back if it could: the owner is marked before the references go.
    @Test func orphaningAReplicaSetLeavesItsPodsEveryTime() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let rs = """
            apiVersion: apps/v1
            kind: ReplicaSet
            metadata: {name: web}
            spec:
              replicas: 3
              selector: {matchLabels: {app: web}}
              template:
                metadata: {labels: {app: web}}
                spec: {containers: [{name: echo, image: kemu/echo}]}
            """
        func pods() throws -> [String] {
            try server.kubectl(["get", "pods", "-l", "app=web", "-o", "name"]).out.split(separator: "\n").map(String.init)
        }
        #expect(try server.kubectl(["apply", "-f", "-"], stdin: rs).code == 0)
        var before: [String] = []
        for _ in 0..<50 where before.count != 3 { before = try pods(); usleep(100_000) }
        #expect(before.count == 3)
        for round in 1...20 {
            #expect(try server.kubectl(["delete", "replicaset", "web", "--cascade=orphan"]).code == 0, "round \(round)")
            usleep(300_000)  // time for a wrong garbage collection to happen, if it would
            #expect(try pods() == before, "round \(round): the orphans stay")
            let owners = try server.kubectl(["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].metadata.ownerReferences}"]).out
            #expect(owners.isEmpty, "round \(round): \(owners)")
            // Created again, it adopts them rather than making new ones.
            #expect(try server.kubectl(["apply", "-f", "-"], stdin: rs).code == 0)
            var adopted = ""
            for _ in 0..<50 {
                adopted = try server.kubectl(["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].metadata.ownerReferences[0].name}"]).out
                if adopted == "web web web" { break }
                usleep(50_000)
            }
            let after = try pods()
            #expect(adopted == "web web web" && after == before, "round \(round): \(adopted)")
        }
    }
}
