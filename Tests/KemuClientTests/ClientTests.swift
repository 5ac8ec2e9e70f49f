import Foundation
import KemuAPI
@testable import KemuClient
import Synchronization
import KemuTestSupport
import Testing

/// KemuClient against a real `kemu server`: CRUD with the server's errors, and an informer that
/// lists, follows a watch, and survives the server being killed and restarted.
@Suite struct ClientTests {
    let pods = APIResources.all.first { $0.resource == "pods" }!

    func pod(_ name: String, tier: String) -> JSON {
        // Bound to a node already, so the server's scheduler does not touch it.
        var p: JSON = ["apiVersion": "v1", "kind": "Pod", "spec": ["nodeName": "node-1", "containers": [["name": "c", "image": "kemu/echo"]]]]
        p.name = name
        p.namespace = "default"
        p.labels = ["app": "web", "tier": tier]
        return p
    }

    @Test func crudReportsTheServersStatuses() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let client = try APIClient(kubeconfig: Kubeconfig.load(path: server.kubeconfig))
        let created = try await client.create(pods, pod("a", tier: "x"))
        #expect(created.uid.count == 36)
        let again = await #expect(throws: ClientError.self) { try await client.create(pods, pod("a", tier: "x")) }
        #expect(again?.code == 409 && again?.reason == "AlreadyExists")

        var changed = created
        changed.labels = ["app": "web", "tier": "y"]
        let updated = try await client.update(pods, changed)
        #expect(updated.labels["tier"] == "y")
        let stale = await #expect(throws: ClientError.self) { try await client.update(pods, changed) }  // created's resourceVersion
        #expect(stale?.code == 409 && stale?.reason == "Conflict")

        let patched = try await client.patch(pods, namespace: "default", name: "a", ["metadata": ["labels": ["tier": "z"]]])
        #expect(patched.labels["tier"] == "z")
        #expect(try await client.list(pods, namespace: "default", labels: "tier in (z)").items.map(\.name) == ["a"])
        #expect(try await client.list(pods, namespace: "default", labels: "tier=y").items.isEmpty)
        try await client.delete(pods, namespace: "default", name: "a")
        let gone = await #expect(throws: ClientError.self) { try await client.get(pods, namespace: "default", name: "a") }
        #expect(gone?.code == 404 && gone?.message == #"pods "a" not found"#)
    }

    @Test func informerFollowsChangesAndReconnectsAfterARestart() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let port = server.port
        let client = try APIClient(kubeconfig: Kubeconfig.load(path: server.kubeconfig))
        try await client.create(pods, pod("early", tier: "x"))

        let seen = Lines()
        let informer = Informer(client, pods, namespace: "default")
        let running = Task {
            try await informer.run { event in
                let line = switch event {
                case .added(let o): "added \(o.name)"
                case .updated(_, let o): "updated \(o.name) \(o.labels["tier"] ?? "")"
                case .deleted(let o): "deleted \(o.name)"
                case .synced: "synced"
                }
                seen.append(line)
            }
        }
        defer { running.cancel() }
        func eventually(_ expected: [String]) async -> [String] {
            // Generous: a full run starts clusters beside this suite, and the first list waited
            // out 10 s under that load once.
            let deadline = Date().addingTimeInterval(30)
            while seen.all != expected && Date() < deadline { try? await Task.sleep(for: .milliseconds(20)) }
            return seen.all
        }

        #expect(await eventually(["added early", "synced"]) == ["added early", "synced"])
        try await client.create(pods, pod("late", tier: "x"))
        _ = try await client.patch(pods, namespace: "default", name: "early", ["metadata": ["labels": ["tier": "y"]]])
        try await client.delete(pods, namespace: "default", name: "late")
        let followed = ["added early", "synced", "added late", "updated early y", "deleted late"]
        #expect(await eventually(followed) == followed)
        #expect(informer.items.map(\.name) == ["early"])
        #expect(informer.get(namespace: "default", name: "early")?.labels["tier"] == "y")

        // A write the informer does not watch moves the store past its last revision; after a
        // kill -9 and a restart on the same port the server replays its history from the log, so
        // the informer resumes its watch where it was, without listing again (no `synced`), and
        // goes on; a pod deleted while it was away arrives as such.
        var svc: JSON = ["apiVersion": "v1", "kind": "Service", "spec": ["ports": [["port": 80]]]]
        svc.name = "bump"
        svc.namespace = "default"
        _ = try await client.create(APIResources.all.first { $0.resource == "services" }!, svc)
        server.crash()
        try server.start(port: port)
        try await client.create(pods, pod("after", tier: "x"))
        #expect(await eventually(followed + ["added after"]) == followed + ["added after"])
    }
}

extension ClientTests {
    /// A proxy's informers keep revisions only and list in pages: what a handler hears is the
    /// same, old and deleted objects after a re-list are stubs, and nothing is cached.
    @Test func revisionsOnlyInformerListsInPagesAndHandsOnStubs() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let client = try APIClient(kubeconfig: Kubeconfig.load(path: server.kubeconfig))
        for i in 0..<7 { try await client.create(pods, pod(String(format: "p%04d", i), tier: "x")) }
        let informer = Informer(client, pods, namespace: "default", cache: .revisions, pageSize: 3)
        let seen = Lines()
        let handler: @Sendable (InformerEvent) async -> Void = { event in
            switch event {
            case .added(let o): seen.append("added \(o.name) \(o.labels["tier"] ?? "")")
            case .updated(let old, let new): seen.append("updated \(old.name)@\(old.resourceVersion ?? 0) → \(new.labels["tier"] ?? "")")
            case .deleted(let o): seen.append("deleted \(o.namespace)/\(o.name) labels \(o.labels.count)")
            case .synced: seen.append("synced")
            }
        }
        try await informer.relist(handler)
        #expect(seen.all == (0..<7).map { String(format: "added p%04d x", $0) } + ["synced"])
        #expect(informer.items.isEmpty && informer.get(namespace: "default", name: "p0000") == nil)

        let before = try await client.get(pods, namespace: "default", name: "p0001").resourceVersion ?? 0
        _ = try await client.patch(pods, namespace: "default", name: "p0001", ["metadata": ["labels": ["tier": "y"]]])
        try await client.delete(pods, namespace: "default", name: "p0002")
        let mark = seen.all.count
        try await informer.relist(handler)
        #expect(Array(seen.all[mark...]) == ["updated p0001@\(before) → y", "deleted default/p0002 labels 0", "synced"])
    }
}

