import Foundation
import KemuAPI
import KemuTestSupport
import Testing

/// `kubectl --dry-run=server`: the server checks and answers everything as if it wrote, and
/// nothing changes.
extension KubectlTests {
    @Test func serverDryRunChangesNothing() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        #expect(try server.kubectl(["create", "-f", "-", "--dry-run=server"], stdin: replicaSet).out == "replicaset.apps/web created (server dry run)\n")
        #expect(try server.kubectl(["get", "rs", "-o", "name"]).out == "")
        let invalid = try server.kubectl(["create", "-f", "-", "--dry-run=server"], stdin: replicaSet.replacingOccurrences(of: "replicas: 2", with: "replicas: -1"))
        #expect(invalid.code == 1 && invalid.out.contains("spec.replicas"), "\(invalid)")

        #expect(try server.kubectl(["create", "-f", "-"], stdin: replicaSet).out == "replicaset.apps/web created\n")
        #expect(try server.kubectl(["scale", "rs", "web", "--replicas=7", "--dry-run=server"]).out.contains("scaled (server dry run)"))
        #expect(try server.kubectl(["label", "rs", "web", "tier=x", "--dry-run=server"]).out.contains("(server dry run)"))
        #expect(try server.kubectl(["delete", "rs", "web", "--dry-run=server"]).out.contains("deleted (server dry run)"))
        #expect(try server.kubectl(["delete", "namespace", "default", "--dry-run=server"]).code == 1)  // still refused: a system namespace
        // (Its resourceVersion moves: the ReplicaSet controller writes its status.)
        let after = try server.kubectl(["get", "rs", "web", "-o", "jsonpath={.metadata.name} {.spec.replicas} {.metadata.labels}"]).out
        #expect(after == #"web 2 {"app":"web"}"#, "\(after)")

        // A dry-run Service shows the address it would get and keeps none: a real one may take it.
        let service = { (name: String, ip: String) in
            #"{"apiVersion":"v1","kind":"Service","metadata":{"name":"\#(name)"},"spec":{"clusterIP":"\#(ip)","ports":[{"port":80}]}}"#
        }
        let shown = try server.kubectl(["create", "-f", "-", "--dry-run=server", "-o", "jsonpath={.spec.clusterIP}"], stdin: service("probe", "")).out
        #expect(shown.hasPrefix("10.96."), "\(shown)")
        let taken = try server.kubectl(["create", "-f", "-"], stdin: service("real", shown))
        #expect(taken.code == 0, "\(taken)")

        let other = try server.kubectl(["get", "--raw", "/api/v1/namespaces/default/pods?dryRun=Some"])
        #expect(other.code == 0)  // reads ignore it, as upstream
        let refused = try server.kubectl(["delete", "--raw", "/api/v1/namespaces/default/services/real?dryRun=Some"])
        #expect(refused.code == 1 && refused.out.contains(#"dryRun: Unsupported value: \"Some\""#) || refused.out.contains(#"dryRun: Unsupported value: "Some""#), "\(refused)")
        #expect(try server.kubectl(["get", "svc", "real", "-o", "name"]).out == "service/real\n")
    }
}
