import Foundation
import KemuAPI
import KemuClient
import KemuPKI
import KemuTestSupport
import Testing

/// RBAC as a kubectl user meets it: `create role/rolebinding` (protobuf bodies), `auth can-i`
/// and `auth whoami` under another user's kubeconfig, and upstream's refusal messages. In the
/// serialized kubectl suite: kubectl runs block a thread of the shared pool.
extension KubectlTests {
    /// A kubeconfig for `user` in `groups`, beside the server's.
    func kubeconfig(_ server: ServerProcess, user: String, groups: [String] = []) throws -> String {
        let path = "\(server.dataDir)/\(user).kubeconfig"
        try server.kubeconfig(user: user, groups: groups).render().write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func kubectl(_ server: ServerProcess, as kubeconfig: String, _ args: [String]) throws -> (code: Int32, out: String) {
        try server.run("/usr/bin/kubectl", ["--kubeconfig", kubeconfig, "--cache-dir", server.cacheDir + "-" + (kubeconfig as NSString).lastPathComponent] + args)
    }

    @Test func rolesGrantWhatKubectlAuthCanIReports() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let alice = try kubeconfig(server, user: "alice", groups: ["dev"])
        let whoami = try kubectl(server, as: alice, ["auth", "whoami"]).out
        #expect(whoami.contains("Username    alice") && whoami.contains("[dev system:authenticated]"), "\(whoami)")
        var can = try kubectl(server, as: alice, ["auth", "can-i", "list", "pods"])
        #expect(can.code == 1 && can.out.hasPrefix("no"), "\(can)")
        let refused = try kubectl(server, as: alice, ["get", "pods"])
        #expect(refused.code == 1 && refused.out.contains(
            #"Error from server (Forbidden): pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "default""#), "\(refused)")

        #expect(try server.kubectl(["create", "role", "reader", "--verb=get,list,watch", "--resource=pods"]).out == "role.rbac.authorization.k8s.io/reader created\n")
        #expect(try server.kubectl(["create", "rolebinding", "dev-reads", "--role=reader", "--group=dev"]).out
            == "rolebinding.rbac.authorization.k8s.io/dev-reads created\n")
        can = try kubectl(server, as: alice, ["auth", "can-i", "list", "pods"])
        #expect(can.code == 0 && can.out == "yes\n", "\(can)")
        can = try kubectl(server, as: alice, ["auth", "can-i", "delete", "pods"])
        #expect(can.code == 1 && can.out.hasPrefix("no"), "\(can)")
        can = try kubectl(server, as: alice, ["auth", "can-i", "list", "pods", "-n", "kube-system"])
        #expect(can.code == 1, "\(can)")
        #expect(try kubectl(server, as: alice, ["get", "pods"]).out.contains("No resources found"))
        let list = try kubectl(server, as: alice, ["auth", "can-i", "--list"]).out
        #expect(list.contains("pods ") && list.contains("[get list watch]"), "\(list)")
        // The admin acts as someone else (impersonation); alice may not.
        #expect(try server.kubectl(["auth", "can-i", "list", "pods", "--as=alice", "--as-group=dev"]).out == "yes\n")
        #expect(try server.kubectl(["auth", "can-i", "list", "pods", "--as=alice"]).out.hasPrefix("no"))
        let asAlice = try server.kubectl(["delete", "namespace", "default", "--as=alice", "--as-group=dev"])
        #expect(asAlice.code == 1 && asAlice.out.contains(#"User "alice" cannot delete resource "namespaces""#), "\(asAlice)")
        let escalate = try kubectl(server, as: alice, ["get", "pods", "--as=kemu-admin", "--as-group=system:masters"])
        #expect(escalate.code == 1 && escalate.out.contains(#"cannot impersonate resource "users""#), "\(escalate)")
    }
}
