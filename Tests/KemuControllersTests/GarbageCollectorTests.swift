import Foundation
import KemuAPI
import KemuControllers
import KemuStore
import KemuTestSupport
import Testing

@Suite struct GarbageCollectorTests {
    func object(_ kind: String, _ name: String, ownedBy owner: JSON? = nil) -> JSON {
        var o: JSON = ["kind": .string(kind)]
        o.name = name
        o.namespace = "default"
        if let owner {
            o["metadata"]?["ownerReferences"] = [["kind": .string(owner.kind), "name": .string(owner.name), "uid": .string(owner.uid), "controller": true]]
        }
        return o
    }

    func names(_ store: Store, _ resource: String) -> [String] { store.list(resource).items.map(\.name) }

    func eventually(_ condition: () -> Bool) async -> Bool {
        let deadline = Date().addingTimeInterval(60)  // generous: every suite shares the cooperative pool, and a loaded start held it 20 s once
        while !condition() && Date() < deadline { try? await Task.sleep(for: .milliseconds(10)) }
        return condition()
    }

    /// Deployment `web` → ReplicaSet `web-abc` → pods `web-abc-1`, `web-abc-2`; returns the ReplicaSet.
    @discardableResult
    func deploymentWithPods(_ store: Store) throws -> JSON {
        let deploy = try store.create("deployments.apps", object("Deployment", "web"))
        let rs = try store.create("replicasets.apps", object("ReplicaSet", "web-abc", ownedBy: deploy))
        try store.create("pods", object("Pod", "web-abc-1", ownedBy: rs))
        try store.create("pods", object("Pod", "web-abc-2", ownedBy: rs))
        return rs
    }

    @Test func deletingAnOwnerTakesItsDependentsAndTheirsAlong() async throws {
        let store = Store()
        let gc = GarbageCollector(store: store)
        let running = Task { try await gc.run() }
        defer { running.cancel() }
        try deploymentWithPods(store)
        try store.create("pods", object("Pod", "loner"))
        try await Task.sleep(for: .milliseconds(50))
        #expect(names(store, "pods").count == 3)  // nothing is collected while owners live

        try store.delete("deployments.apps", namespace: "default", name: "web")
        #expect(await eventually { names(store, "replicasets.apps").isEmpty && names(store, "pods") == ["loner"] })
    }

    /// Owners of any kind count, not only the workloads: a Job's pods survive the sweep at start
    /// (they were once taken for orphans there), and a user's ConfigMap owned by a Secret goes
    /// with it. An owner of a kind kemu does not serve is taken as alive.
    @Test func ownersOfAnyKind() async throws {
        let store = Store()
        var job: JSON = ["apiVersion": "batch/v1", "kind": "Job"]
        job.name = "migrate"
        job.namespace = "default"
        let createdJob = try store.create("jobs.batch", job)
        try store.create("pods", object("Pod", "migrate-x", ownedBy: createdJob))
        let secret = try store.create("secrets", object("Secret", "creds"))
        try store.create("configmaps", object("ConfigMap", "derived", ownedBy: secret))
        var foreign = object("ConfigMap", "foreign")
        foreign["metadata"]?["ownerReferences"] = [["apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": "1234"]]
        try store.create("configmaps", foreign)
        let gc = GarbageCollector(store: store)
        let running = Task { try await gc.run() }
        defer { running.cancel() }
        try await Task.sleep(for: .milliseconds(200))
        #expect(names(store, "pods") == ["migrate-x"], "the sweep at start keeps a live Job's pods")
        try store.delete("secrets", namespace: "default", name: "creds")
        #expect(await eventually { names(store, "configmaps") == ["foreign"] })
        try store.delete("jobs.batch", namespace: "default", name: "migrate")
        #expect(await eventually { names(store, "pods").isEmpty })
    }

    @Test func foregroundDeletionRemovesTheOwnerLast() async throws {
        let store = Store()
        let gc = GarbageCollector(store: store)
        let running = Task { try await gc.run() }
        defer { running.cancel() }
        let rs = try deploymentWithPods(store)
        // A pod another live owner also keeps loses only the reference to the deleted one.
        let other = try store.create("replicasets.apps", object("ReplicaSet", "other"))
        var shared = object("Pod", "shared", ownedBy: rs)
        let references = (shared[path: "metadata.ownerReferences"]?.array ?? []) + [["kind": "ReplicaSet", "name": "other", "uid": .string(other.uid)]]
        shared["metadata"]?["ownerReferences"] = .array(references)
        try store.create("pods", shared)

        let from = store.revision
        let watches = try ["pods", "replicasets.apps", "deployments.apps"].map { try store.watch(WatchFilter($0), from: from) }
        try store.modify("deployments.apps", namespace: "default", name: "web") { $0.finalizers = [GarbageCollector.foreground] }
        try store.delete("deployments.apps", namespace: "default", name: "web")
        #expect(await eventually { names(store, "deployments.apps").isEmpty })
        #expect(names(store, "replicasets.apps") == ["other"])
        #expect(names(store, "pods") == ["shared"])
        #expect(store.get("pods", namespace: "default", name: "shared")?.ownerUIDs == [other.uid])

        // Every dependent went before its owner: pods, then the ReplicaSet, then the Deployment.
        var deletedAt: [String: Int64] = [:]
        for (stream, count) in zip(watches, [2, 1, 1]) {
            var seen = 0
            for try await event in stream where event.type == .deleted {
                deletedAt[event.object.name] = event.object.resourceVersion
                seen += 1
                if seen == count { break }
            }
        }
        #expect(deletedAt.count == 4)
        #expect(max(deletedAt["web-abc-1"] ?? .max, deletedAt["web-abc-2"] ?? .max) < deletedAt["web-abc"] ?? 0)
        #expect(deletedAt["web-abc"] ?? .max < deletedAt["web"] ?? 0)
    }

    @Test func dependentsOrphanedWhileStoppedAreCollectedAtStart() async throws {
        let store = Store()
        var ghost = object("ReplicaSet", "ghost")
        ghost.uid = "00000000-dead"
        try store.create("pods", object("Pod", "left-behind", ownedBy: ghost))
        let gc = GarbageCollector(store: store)
        let running = Task { try await gc.run() }
        defer { running.cancel() }
        #expect(await eventually { names(store, "pods").isEmpty })
    }
}
