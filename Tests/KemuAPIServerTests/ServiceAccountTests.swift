import Foundation
import KemuAPI
import KemuClient
import KemuTestSupport
import Testing

/// ServiceAccounts against a real `kemu server`: every namespace gets `default` and the root CA
/// ConfigMap, TokenRequest issues tokens the server takes back with exactly the account's rights,
/// and a token dies with the account or pod it names.
@Suite(.serialized) struct ServiceAccountTests {
    static func tokenRequest(seconds: Int? = nil, pod: (name: String, uid: String)? = nil) -> JSON {
        var spec: JSON = [:]
        if let seconds { spec["expirationSeconds"] = .int(Int64(seconds)) }
        if let pod { spec["boundObjectRef"] = ["apiVersion": "v1", "kind": "Pod", "name": .string(pod.name), "uid": .string(pod.uid)] }
        return ["apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec]
    }

    static func token(_ client: APIClient, _ account: String, namespace: String = "default", pod: (name: String, uid: String)? = nil) async throws -> String {
        let answer = try await client.create(APIResources.serviceAccounts, namespace: namespace, name: account, subresource: "token",
                                             tokenRequest(pod: pod))
        return try #require(answer[path: "status.token"]?.string)
    }

    static func whoami(_ server: ServerProcess, _ token: String, scheme: String = "Bearer") async throws -> (code: Int, body: String) {
        // A client without the admin's certificate, which would be taken before any token.
        try await send(try APIClient(kubeconfig: server.kubeconfig(token: "")), "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                       body: Array(#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#.utf8),
                       authorization: "\(scheme) \(token)")
    }

    @Test func everyNamespaceHasItsDefaultAccountAndTheClusterCA() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let admin = try server.client()
        var team: JSON = ["apiVersion": "v1", "kind": "Namespace"]
        team.name = "team"
        _ = try await admin.create(APIResources.namespaces, team)
        let ca = try Kubeconfig.load(path: server.kubeconfig).certificateAuthorityPEM?.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(await eventually {
            let account = try? await admin.get(APIResources.serviceAccounts, namespace: "team", name: "default")
            let map = try? await admin.get(APIResources.configMaps, namespace: "team", name: "kube-root-ca.crt")
            return account != nil && map?["data"]?["ca.crt"]?.string?.trimmingCharacters(in: .whitespacesAndNewlines) == ca
        })
        // Deleted, it comes back (a new object); so does the CA map, and a changed one is put right.
        let first = try await admin.get(APIResources.serviceAccounts, namespace: "team", name: "default").uid
        try await admin.delete(APIResources.serviceAccounts, namespace: "team", name: "default")
        _ = try await admin.patch(APIResources.configMaps, namespace: "team", name: "kube-root-ca.crt", ["data": ["ca.crt": "forged"]])
        #expect(await eventually {
            let again = try? await admin.get(APIResources.serviceAccounts, namespace: "team", name: "default")
            let map = try? await admin.get(APIResources.configMaps, namespace: "team", name: "kube-root-ca.crt")
            return again != nil && again?.uid != first && map?["data"]?["ca.crt"]?.string?.trimmingCharacters(in: .whitespacesAndNewlines) == ca
        })
        #expect(try await admin.list(APIResources.serviceAccounts, namespace: "kube-system").items.map(\.name).contains("default"))
    }

    @Test func aTokenActsAsItsAccountWithItsRightsOnly() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let admin = try server.client()
        var bot: JSON = ["apiVersion": "v1", "kind": "ServiceAccount"]
        bot.name = "bot"
        bot.namespace = "default"
        _ = try await admin.create(APIResources.serviceAccounts, bot)
        let token = try await Self.token(admin, "bot")
        let who = try await Self.whoami(server, token)
        #expect(who.code == 201 && who.body.contains(#""username":"system:serviceaccount:default:bot""#)
                && who.body.contains("system:serviceaccounts:default"), "\(who)")
        // Any case of the scheme (python's client sends `bearer`).
        #expect(try await Self.whoami(server, token, scheme: "bearer").code == 201)

        let asBot = try APIClient(kubeconfig: server.kubeconfig(token: token))
        await RBACTests.refused(403, "the bot listing pods before any binding") { try await asBot.list(APIResources.pods, namespace: "default") }
        _ = try await admin.create(APIResources.roleBindings, RBACTests.roleBinding("bot-views", namespace: "default", role: "view",
                                                                                   subject: ("ServiceAccount", "bot")))
        #expect(await eventually { (try? await asBot.list(APIResources.pods, namespace: "default")) != nil })
        await RBACTests.refused(403, "the bot deleting a pod") { try await asBot.delete(APIResources.pods, namespace: "default", name: "x") }
        await RBACTests.refused(403, "the bot in another namespace") { try await asBot.list(APIResources.pods, namespace: "kube-system") }

        // A changed byte, another signature, or a token of an account deleted since: 401.
        var forged = Array(token.utf8)
        forged[forged.count / 2] = forged[forged.count / 2] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        #expect(try await Self.whoami(server, String(decoding: forged, as: UTF8.self)).code == 401)
        #expect(try await Self.whoami(server, "a.b.c").code == 401)
        try await admin.delete(APIResources.serviceAccounts, namespace: "default", name: "bot")
        #expect(try await Self.whoami(server, token).code == 401)
    }

    @Test func aPodBoundTokenDiesWithItsPod() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let admin = try server.client()
        let web = try await admin.create(APIResources.pods, pod("web"))
        #expect(web[path: "spec.serviceAccountName"]?.string == "default", "admission names the default account")
        let token = try await Self.token(admin, "default", pod: (web.name, web.uid))
        #expect(try await Self.whoami(server, token).code == 201)
        // Bound to a pod of another account, to a wrong uid, with too short a life: refused, naming why.
        var bot: JSON = ["apiVersion": "v1", "kind": "ServiceAccount"]
        bot.name = "bot"
        bot.namespace = "default"
        _ = try await admin.create(APIResources.serviceAccounts, bot)
        let other = await RBACTests.refused(400, "a bot token bound to a pod of default") {
            try await admin.create(APIResources.serviceAccounts, namespace: "default", name: "bot", subresource: "token",
                                   Self.tokenRequest(pod: (web.name, web.uid)))
        }
        #expect(other.contains("different serviceaccount name"), "\(other)")
        await RBACTests.refused(409, "a stale pod uid") {
            try await admin.create(APIResources.serviceAccounts, namespace: "default", name: "default", subresource: "token",
                                   Self.tokenRequest(pod: (web.name, "00000000-0000-0000-0000-000000000000")))
        }
        let short = await RBACTests.refused(422, "a 60 s token") {
            try await admin.create(APIResources.serviceAccounts, namespace: "default", name: "default", subresource: "token",
                                   Self.tokenRequest(seconds: 60))
        }
        #expect(short.contains("spec.expirationSeconds"), "\(short)")

        try await admin.delete(APIResources.pods, namespace: "default", name: "web", gracePeriodSeconds: 0)
        #expect(await eventually { (try? await Self.whoami(server, token))?.code == 401 })
    }

    @Test func aNodeGetsTokensOnlyForItsOwnPods() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let admin = try server.client()
        let here = try await admin.create(APIResources.pods, pod("here", node: "n1"))
        let there = try await admin.create(APIResources.pods, pod("there", node: "n2"))
        let n1 = try APIClient(kubeconfig: server.kubeconfig(user: "system:node:n1", groups: ["system:nodes"]))
        let token = try await Self.token(n1, "default", pod: (here.name, here.uid))
        #expect(try await Self.whoami(server, token).code == 201)
        let refusal = await RBACTests.refused(403, "n1 asking for a token of a pod on n2") {
            try await Self.token(n1, "default", pod: (there.name, there.uid))
        }
        #expect(refusal.contains("pods scheduled on it"), "\(refusal)")
        await RBACTests.refused(403, "n1 asking for an unbound token") { try await Self.token(n1, "default") }
    }

    @Test func podAdmissionChecksTheAccount() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let admin = try server.client()
        var ghost = pod("ghost")
        ghost["spec", default: [:]]["serviceAccountName"] = "nobody-here"
        let refusal = await RBACTests.refused(403, "a pod of a missing account") { try await admin.create(APIResources.pods, ghost) }
        #expect(refusal == "pods \"ghost\" is forbidden: error looking up service account default/nobody-here: serviceaccount \"nobody-here\" not found")
        var quiet: JSON = ["apiVersion": "v1", "kind": "ServiceAccount", "automountServiceAccountToken": false]
        quiet.name = "quiet"
        quiet.namespace = "default"
        _ = try await admin.create(APIResources.serviceAccounts, quiet)
        var calm = pod("calm")
        calm["spec", default: [:]]["serviceAccountName"] = "quiet"
        let created = try await admin.create(APIResources.pods, calm)
        #expect(created[path: "spec.automountServiceAccountToken"]?.bool == false)
    }
}
