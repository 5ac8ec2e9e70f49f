import Foundation
import KemuAPI
import KemuClient
import KemuPKI
import KemuTestSupport
import Testing

/// Authorization against a real `kemu server`: every caller has only the rights RBAC or the node
/// authorizer gives it, and nobody grants more than they hold.
@Suite(.serialized) struct RBACTests {
    /// A client with a certificate the server's CA signed for `user` in `groups`.
    static func client(_ server: ServerProcess, user: String, groups: [String] = []) throws -> APIClient {
        try APIClient(kubeconfig: server.kubeconfig(user: user, groups: groups))
    }

    static func object(_ text: String) throws -> JSON { try JSON.parse(Array(text.utf8)) }

    static func roleBinding(_ name: String, namespace: String, role: String, kind: String = "ClusterRole", subject: (String, String)) throws -> JSON {
        try object("""
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "\(name)", "namespace": "\(namespace)"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "\(kind)", "name": "\(role)"},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "\(subject.0)", "name": "\(subject.1)"}]}
        """)
    }

    /// The request fails with this HTTP code; returns the server's message.
    @discardableResult
    static func refused(_ code: Int, _ what: String, _ body: () async throws -> Any) async -> String {
        do {
            _ = try await body()
            Issue.record("\(what) was allowed")
        } catch let error as ClientError {
            #expect(error.code == code, "\(what): \(error)")
            return error.message
        } catch {
            Issue.record("\(what): \(error)")
        }
        return ""
    }

    @Test func aViewerListsButCannotDeleteWriteOrExec() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let admin = try APIClient(kubeconfig: Kubeconfig.load(path: server.kubeconfig))
        _ = try await admin.create(APIResources.pods, pod("web"))
        _ = try await admin.create(APIResources.roleBindings, Self.roleBinding("viewers", namespace: "default", role: "view", subject: ("Group", "viewers")))
        let viewer = try Self.client(server, user: "viewer", groups: ["viewers"])

        #expect(try await viewer.list(APIResources.pods, namespace: "default").items.map(\.name) == ["web"])
        #expect(try await viewer.get(APIResources.pods, namespace: "default", name: "web").name == "web")
        let message = await Self.refused(403, "deleting namespace default") {
            try await viewer.delete(APIResources.namespaces, name: "default")
        }
        #expect(message == "namespaces \"default\" is forbidden: User \"viewer\" cannot delete resource \"namespaces\" in API group \"\" at the cluster scope")
        await Self.refused(403, "deleting a pod") { try await viewer.delete(APIResources.pods, namespace: "default", name: "web") }
        await Self.refused(403, "creating a pod") { try await viewer.create(APIResources.pods, pod("mine")) }
        await Self.refused(403, "listing secrets-free pods elsewhere") { try await viewer.list(APIResources.pods, namespace: "kube-system") }
        await Self.refused(403, "reading roles") { try await viewer.list(APIResources.clusterRoles) }
        let exec = try await send(viewer, "GET", "/api/v1/namespaces/default/pods/web/exec?command=id&stdout=true")
        #expect(exec.code == 403 && exec.body.contains("cannot create resource \\\"pods/exec\\\""), "\(exec)")
        let logs = try await send(viewer, "GET", "/api/v1/namespaces/default/pods/web/log")
        #expect(logs.code != 403, "view reads pods/log: \(logs)")
        // Nothing changed.
        #expect(try await admin.get(APIResources.pods, namespace: "default", name: "web").name == "web")

        // Without a binding: discovery and the self reviews only.
        let stranger = try Self.client(server, user: "stranger")
        await Self.refused(403, "a stranger listing pods") { try await stranger.list(APIResources.pods, namespace: "default") }
        #expect(try await send(stranger, "GET", "/version").code == 200)
        #expect(try await send(stranger, "GET", "/apis").code == 200)
        #expect(try await send(stranger, "GET", "/metrics").code == 403)
        let whoami = try await send(stranger, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                                    body: Array(#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#.utf8))
        #expect(whoami.code == 201 && whoami.body.contains(#""username":"stranger""#) && whoami.body.contains("system:authenticated"), "\(whoami)")
    }

    @Test func accessReviewsAnswerForTheCallerAndForOthers() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let admin = try APIClient(kubeconfig: Kubeconfig.load(path: server.kubeconfig))
        _ = try await admin.create(APIResources.roleBindings, Self.roleBinding("viewers", namespace: "default", role: "view", subject: ("User", "viewer")))
        let viewer = try Self.client(server, user: "viewer")
        func ask(_ client: APIClient, _ verb: String, _ resource: String, namespace: String = "default", kind: String = "SelfSubjectAccessReview",
                 extra: String = "") async throws -> (Int, Bool) {
            let plural = kind.lowercased() + "s"
            let body = #"{"kind":"\#(kind)","apiVersion":"authorization.k8s.io/v1","spec":{\#(extra)"resourceAttributes":{"namespace":"\#(namespace)","verb":"\#(verb)","resource":"\#(resource)"}}}"#
            let answer = try await send(client, "POST", "/apis/authorization.k8s.io/v1/\(plural)", body: Array(body.utf8))
            let status = try? JSON.parse(Array(answer.body.utf8))
            return (answer.code, status?[path: "status.allowed"]?.bool ?? false)
        }
        #expect(try await ask(viewer, "list", "pods") == (201, true))
        #expect(try await ask(viewer, "delete", "pods") == (201, false))
        #expect(try await ask(viewer, "list", "pods", namespace: "kube-system") == (201, false))
        // Asking about someone else takes the right to: the admin may, the viewer may not.
        #expect(try await ask(admin, "get", "pods", kind: "SubjectAccessReview", extra: #""user":"viewer","#) == (201, true))
        #expect(try await ask(admin, "create", "pods", kind: "SubjectAccessReview", extra: #""user":"viewer","#) == (201, false))
        #expect(try await ask(viewer, "get", "pods", kind: "SubjectAccessReview", extra: #""user":"viewer","#).0 == 403)
        let neither = try await send(viewer, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                                     body: Array(#"{"kind":"SelfSubjectAccessReview","apiVersion":"authorization.k8s.io/v1","spec":{}}"#.utf8))
        #expect(neither.code == 422 && neither.body.contains("exactly one of nonResourceAttributes or resourceAttributes"), "\(neither)")
        // Reviews are never stored.
        let list = try await send(admin, "GET", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
        #expect(list.code == 405, "\(list)")
    }

    @Test func aNodeWritesOnlyItsOwnNodeAndItsOwnPods() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let admin = try APIClient(kubeconfig: Kubeconfig.load(path: server.kubeconfig))
        let n1 = try Self.client(server, user: "system:node:n1", groups: ["system:nodes"])
        var node: JSON = ["apiVersion": "v1", "kind": "Node"]
        node.name = "n1"
        _ = try await n1.create(APIResources.nodes, node)  // its own: allowed
        node.name = "n2"
        await Self.refused(403, "node n1 creating node n2") { try await n1.create(APIResources.nodes, node) }
        _ = try await admin.create(APIResources.nodes, node)
        _ = try await n1.patch(APIResources.nodes, name: "n1", ["status": ["phase": "Running"]], subresource: "status")
        await Self.refused(403, "node n1 patching n2's status") {
            try await n1.patch(APIResources.nodes, name: "n2", ["status": ["phase": "Running"]], subresource: "status")
        }
        await Self.refused(403, "node n1 deleting n2") { try await n1.delete(APIResources.nodes, name: "n2") }
        _ = try await admin.create(APIResources.pods, pod("mine", node: "n1"))
        _ = try await admin.create(APIResources.pods, pod("theirs", node: "n2"))
        #expect(try await n1.list(APIResources.pods, fields: "spec.nodeName=n1").items.map(\.name) == ["mine"])
        _ = try await n1.patch(APIResources.pods, namespace: "default", name: "mine", ["status": ["phase": "Running"]], subresource: "status")
        await Self.refused(403, "node n1 patching a pod on n2") {
            try await n1.patch(APIResources.pods, namespace: "default", name: "theirs", ["status": ["phase": "Running"]], subresource: "status")
        }
        await Self.refused(403, "node n1 deleting a pod on n2") {
            try await n1.delete(APIResources.pods, namespace: "default", name: "theirs", gracePeriodSeconds: 0)
        }
        await Self.refused(403, "node n1 changing a pod's spec") {
            try await n1.patch(APIResources.pods, namespace: "default", name: "mine", ["metadata": ["labels": ["x": "y"]]])
        }
        await Self.refused(403, "node n1 creating a namespace") {
            var ns: JSON = ["apiVersion": "v1", "kind": "Namespace"]
            ns.name = "mine"
            return try await n1.create(APIResources.namespaces, ns)
        }
        let exec = try await send(n1, "GET", "/api/v1/namespaces/default/pods/theirs/exec?command=id")
        #expect(exec.code == 403, "\(exec)")
        #expect(try await admin.get(APIResources.pods, namespace: "default", name: "theirs")[path: "status.phase"]?.string == "Pending")
        // A made-up node name without the group is no node.
        let impostor = try Self.client(server, user: "system:node:n1")
        await Self.refused(403, "system:node:n1 outside system:nodes") {
            try await impostor.patch(APIResources.nodes, name: "n1", ["status": ["phase": "x"]], subresource: "status")
        }
    }

    @Test func nobodyGrantsMoreThanTheyHold() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let admin = try APIClient(kubeconfig: Kubeconfig.load(path: server.kubeconfig))
        var ns: JSON = ["apiVersion": "v1", "kind": "Namespace"]
        ns.name = "team"
        _ = try await admin.create(APIResources.namespaces, ns)
        _ = try await admin.create(APIResources.roleBindings, Self.roleBinding("lead", namespace: "team", role: "admin", subject: ("User", "lead")))
        let lead = try Self.client(server, user: "lead")
        let podReader = try Self.object("""
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "pod-reader", "namespace": "team"},
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]}
        """)
        _ = try await lead.create(APIResources.roles, podReader)
        _ = try await lead.create(APIResources.roleBindings, Self.roleBinding("dev-read", namespace: "team", role: "pod-reader", kind: "Role", subject: ("User", "dev")))
        let dev = try Self.client(server, user: "dev")
        #expect(try await dev.list(APIResources.pods, namespace: "team").items.isEmpty)
        await Self.refused(403, "dev listing pods in default") { try await dev.list(APIResources.pods, namespace: "default") }

        var nodeReader = podReader
        nodeReader.name = "node-reader"
        nodeReader["rules"] = [["apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]]]
        let message = await Self.refused(403, "a namespace admin granting node reads") { try await lead.create(APIResources.roles, nodeReader) }
        #expect(message.contains("attempting to grant RBAC permissions not currently held"), "\(message)")
        await Self.refused(403, "a namespace admin binding cluster-admin") {
            try await lead.create(APIResources.roleBindings, Self.roleBinding("root", namespace: "team", role: "cluster-admin", subject: ("User", "lead")))
        }
        await Self.refused(403, "a namespace admin binding in another namespace") {
            try await lead.create(APIResources.roleBindings, Self.roleBinding("x", namespace: "default", role: "view", subject: ("User", "dev")))
        }
        #expect(try await admin.list(APIResources.roleBindings, namespace: "team").items.map(\.name).sorted() == ["dev-read", "lead"])
    }

    @Test func rbacObjectsAreValidated() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let admin = try APIClient(kubeconfig: Kubeconfig.load(path: server.kubeconfig))
        var binding = try Self.roleBinding("b", namespace: "default", role: "view", subject: ("Robot", "r2"))
        var message = await Self.refused(422, "a subject of kind Robot") { try await admin.create(APIResources.roleBindings, binding) }
        #expect(message.contains("subjects[0].kind"), "\(message)")
        binding = try Self.roleBinding("b", namespace: "default", role: "view", subject: ("User", "u"))
        binding["roleRef"] = nil
        message = await Self.refused(422, "a binding without roleRef") { try await admin.create(APIResources.roleBindings, binding) }
        #expect(message.contains("roleRef.name: Required value"), "\(message)")
        _ = try await admin.create(APIResources.roleBindings, Self.roleBinding("b", namespace: "default", role: "view", subject: ("User", "u")))
        message = await Self.refused(422, "changing roleRef") {
            try await admin.patch(APIResources.roleBindings, namespace: "default", name: "b", ["roleRef": ["name": "edit"]])
        }
        #expect(message.contains("cannot change roleRef"), "\(message)")
        let role = try Self.object("""
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "r", "namespace": "default"},
         "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}, {"apiGroups": [""], "resources": ["pods"]}]}
        """)
        message = await Self.refused(422, "a Role with non-resource URLs and no verbs") { try await admin.create(APIResources.roles, role) }
        #expect(message.contains("rules[0].nonResourceURLs") && message.contains("rules[1].verbs: Required value"), "\(message)")
        // The bootstrap roles are there, and put back after a change.
        let names = try await admin.list(APIResources.clusterRoles).items.map(\.name)
        for name in ["cluster-admin", "admin", "edit", "view", "system:node-proxier", "system:discovery"] { #expect(names.contains(name), "\(name)") }
    }

    @Test func aggregatedRolesTakeInRolesLabelledForThem() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let admin = try APIClient(kubeconfig: Kubeconfig.load(path: server.kubeconfig))
        _ = try await admin.create(APIResources.roleBindings, Self.roleBinding("v", namespace: "default", role: "view", subject: ("User", "viewer")))
        let viewer = try Self.client(server, user: "viewer")
        await Self.refused(403, "view reading roles before") { try await viewer.list(APIResources.roles, namespace: "default") }
        let extra = try Self.object("""
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "roles-view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
         "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["list"]}]}
        """)
        _ = try await admin.create(APIResources.clusterRoles, extra)
        #expect(try await viewer.list(APIResources.roles, namespace: "default").items.isEmpty)
    }

    @Test func theAuditLogRecordsWritesAndRefusalsNotReads() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let admin = try APIClient(kubeconfig: Kubeconfig.load(path: server.kubeconfig))
        _ = try await admin.create(APIResources.pods, pod("audited"))
        _ = try await admin.list(APIResources.pods, namespace: "default")
        let viewer = try Self.client(server, user: "mallory", groups: ["outsiders"])
        await Self.refused(403, "mallory deleting kube-system") { try await viewer.delete(APIResources.namespaces, name: "kube-system") }
        _ = try await admin.delete(APIResources.pods, namespace: "default", name: "audited", gracePeriodSeconds: 0)
        let path = server.dataDir + "/audit.log"
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        let events = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map { try JSON.parse(Array($0.utf8)) }
        let summary = events.map { e in
            "\(e[path: "user.username"]?.string ?? "?") \(e["verb"]?.string ?? "?") \(e[path: "objectRef.resource"]?.string ?? "-")/\(e[path: "objectRef.name"]?.string ?? "-") \(e[path: "responseStatus.code"]?.int ?? 0)"
        }
        #expect(summary.contains("kemu-admin create pods/- 201"), "\(summary)")
        #expect(summary.contains("mallory delete namespaces/kube-system 403"), "\(summary)")
        #expect(summary.contains("kemu-admin delete pods/audited 200"), "\(summary)")
        #expect(!summary.contains { $0.contains(" list ") }, "reads are not recorded: \(summary)")
        let refusal = try #require(events.first { $0[path: "user.username"]?.string == "mallory" })
        #expect(refusal["apiVersion"]?.string == "audit.k8s.io/v1" && refusal["kind"]?.string == "Event" && refusal["level"]?.string == "Metadata")
        #expect(refusal[path: "user.groups"]?.array?.compactMap(\.string) == ["outsiders"])
        #expect(refusal["sourceIPs"]?.array?.first?.string == "127.0.0.1")
        #expect(refusal["requestReceivedTimestamp"]?.string?.count == "2026-12-04T13:37:20.123456Z".count)
    }
}
