import Foundation
import KemuTestSupport
import Testing

/// ServiceAccounts as a kubectl user meets them: `create serviceaccount` and `create token`
/// (protobuf bodies), the token used as kubectl's only credential, and the account's rights.
extension KubectlTests {
    @Test func kubectlCreatesAccountsAndTokensThatWorkAsCredentials() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        #expect(try server.kubectl(["create", "serviceaccount", "bot"]).out == "serviceaccount/bot created\n")
        let listed = try server.kubectl(["get", "serviceaccounts", "-o", "name"]).out
        #expect(listed.contains("serviceaccount/bot") && listed.contains("serviceaccount/default"), "\(listed)")
        let created = try server.kubectl(["create", "token", "bot", "--duration=20m"])
        let token = created.out.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(created.code == 0 && token.split(separator: ".").count == 3, "\(created)")
        let short = try server.kubectl(["create", "token", "bot", "--duration=1m"])
        #expect(short.code != 0 && short.out.contains("may not specify a duration less than 10 minutes"), "\(short)")

        // The token alone, as an in-cluster client holds it.
        let path = "\(server.dataDir)/bot.kubeconfig"
        try server.kubeconfig(token: token).render().write(toFile: path, atomically: true, encoding: .utf8)
        let whoami = try kubectl(server, as: path, ["auth", "whoami"]).out
        #expect(whoami.contains("system:serviceaccount:default:bot") && whoami.contains("system:serviceaccounts:default"), "\(whoami)")
        #expect(try kubectl(server, as: path, ["get", "pods"]).code != 0)
        _ = try server.kubectl(["create", "rolebinding", "bot-views", "--clusterrole=view", "--serviceaccount=default:bot"])
        let pods = try kubectl(server, as: path, ["get", "pods"])
        #expect(pods.code == 0, "\(pods)")
        let delete = try kubectl(server, as: path, ["delete", "serviceaccount", "default"])
        #expect(delete.code != 0 && delete.out.contains("forbidden"), "\(delete)")
        _ = try server.kubectl(["delete", "serviceaccount", "bot"])
        let gone = try kubectl(server, as: path, ["get", "pods"])
        #expect(gone.code != 0 && gone.out.contains("Unauthorized"), "a deleted account's token: \(gone)")
    }
}
