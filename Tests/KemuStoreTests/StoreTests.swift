import Foundation
import KemuAPI
@testable import KemuStore
import KemuTestSupport
import Testing

@Suite struct StoreTests {
    @Test func listPagesFollowNamespaceThenNameOrder() throws {
        let store = Store()
        // "a" sorts before "a-b" as a namespace although "a-b/…" < "a/…" as text.
        for (ns, name) in [("a-b", "x"), ("a", "z"), ("a", "y"), ("b", "w"), ("a-b", "v")] {
            try store.create("pods", pod(name, namespace: ns, labels: ["tier": name == "y" || name == "v" ? "front" : "back"]))
        }
        var after: (String, String)?
        var pages: [[String]] = []
        var remaining: [Int?] = []
        repeat {
            let page = store.listPage("pods", after: after, limit: 2)
            pages.append(page.items.map { "\($0.namespace)/\($0.name)" })
            remaining.append(page.remaining)
            after = page.more ? page.items.last.map { ($0.namespace, $0.name) } : nil
        } while after != nil
        #expect(pages == [["a/y", "a/z"], ["a-b/v", "a-b/x"], ["b/w"]])
        #expect(remaining == [3, 1, nil])
        #expect(pages.flatMap { $0 } == store.list("pods").items.map { "\($0.namespace)/\($0.name)" })
        // Under a selector: pages of what matches, no count of the rest.
        let front = store.listPage("pods", labels: try LabelSelector(parsing: "tier=front"), after: nil, limit: 1)
        #expect(front.items.map(\.name) == ["y"] && front.more && front.remaining == nil)
        let next = store.listPage("pods", labels: try LabelSelector(parsing: "tier=front"), after: ("a", "y"), limit: 1)
        #expect(next.items.map(\.name) == ["v"] && !next.more)
    }

    @Test func dependentsFollowOwnerReferencesAsTheyChange() throws {
        let store = Store()
        func owned(_ name: String, by uids: [String]) -> JSON {
            var p = pod(name)
            p["metadata", default: [:]]["ownerReferences"] = .array(uids.map { ["apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": .string($0)] })
            return p
        }
        try store.create("pods", owned("a", by: ["u1"]))
        try store.create("pods", owned("b", by: ["u1", "u2"]))
        try store.create("pods", owned("c", by: []))
        #expect(store.dependents(of: "u1").map(\.object.name) == ["a", "b"])
        #expect(store.dependents(of: "u2").map(\.object.name) == ["b"])
        try store.modify("pods", namespace: "default", name: "b") { $0.removeOwnerReference("u1") }
        #expect(store.dependents(of: "u1").map(\.object.name) == ["a"])
        try store.delete("pods", namespace: "default", name: "a")
        #expect(store.dependents(of: "u1").isEmpty && store.dependents(of: "u2").map(\.object.name) == ["b"])
    }

    @Test func createSetsServerOwnedMetadata() throws {
        let store = Store()
        let created = try store.create("pods", pod("web"))
        #expect(created.resourceVersion == 1 && created.generation == 1)
        #expect(created.uid.count == 36)
        #expect(created[path: "metadata.creationTimestamp"]?.string?.hasSuffix("Z") == true)
        #expect(store.get("pods", namespace: "default", name: "web") == created)
        #expect((#expect(throws: StoreError.self) { try store.create("pods", pod("web")) }) == .alreadyExists(resource: "pods", name: "web"))
        #expect(store.revision == 1)

        var generated = pod("")
        generated["metadata"]?["generateName"] = "web-"
        let g = try store.create("pods", generated)
        #expect(g.name.hasPrefix("web-") && g.name.count == 9)
        #expect(throws: StoreError.self) { try store.create("pods", pod("")) }
    }

    @Test func updatesAreOptimisticAndGenerationFollowsSpec() throws {
        let store = Store()
        let v1 = try store.create("deployments.apps", pod("web"))
        var stale = v1
        var next = v1
        next.labels = ["x": "y"]
        let v2 = try store.update("deployments.apps", next)
        #expect(v2.resourceVersion == 2 && v2.generation == 1)  // metadata only

        stale["spec"]?["replicas"] = 3
        #expect((#expect(throws: StoreError.self) { try store.update("deployments.apps", stale) }) == .conflict(resource: "deployments.apps", name: "web"))
        #expect(store.get("deployments.apps", namespace: "default", name: "web") == v2)

        var spec = v2
        spec["spec"]?["replicas"] = 3
        spec["metadata"]?["uid"] = "forged"
        let v3 = try store.update("deployments.apps", spec)
        #expect(v3.generation == 2 && v3.uid == v1.uid)

        var unconditional = v3
        unconditional.resourceVersion = nil
        unconditional["status"] = ["replicas": 3]
        #expect(try store.update("deployments.apps", unconditional, part: .main)["status"] == nil)
        var status = v3
        status.resourceVersion = nil
        status["status"] = ["replicas": 3]
        status["spec"]?["replicas"] = 99
        let v5 = try store.update("deployments.apps", status, part: .status)
        #expect(v5["status"]?["replicas"]?.int == 3 && v5[path: "spec.replicas"]?.int == 3 && v5.generation == 2)
        #expect(throws: StoreError.self) { try store.update("deployments.apps", pod("ghost")) }
    }

    @Test func modifyRetriesUntilItWins() async throws {
        let store = Store()
        try store.create("configmaps", ["metadata": ["name": "counter", "namespace": "default"], "data": ["n": 0]])
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    for _ in 0..<50 {
                        try! store.modify("configmaps", namespace: "default", name: "counter") { o in
                            let n = o[path: "data.n"]?.int ?? 0
                            o["data"]?["n"] = .int(n + 1)
                        }
                    }
                }
            }
        }
        #expect(store.get("configmaps", namespace: "default", name: "counter")?[path: "data.n"]?.int == 400)
        #expect(store.revision == 401)
    }

    @Test func deleteHonoursPreconditions() throws {
        let store = Store()
        let created = try store.create("pods", pod("web"))
        #expect((#expect(throws: StoreError.self) { try store.delete("pods", namespace: "default", name: "web", uid: "other") }) == .conflict(resource: "pods", name: "web"))
        let gone = try store.delete("pods", namespace: "default", name: "web", uid: created.uid)
        #expect(gone.resourceVersion == 2 && gone.name == "web")
        #expect(store.get("pods", namespace: "default", name: "web") == nil)
        #expect((#expect(throws: StoreError.self) { try store.delete("pods", namespace: "default", name: "web") }) == .notFound(resource: "pods", name: "web"))
    }

    @Test func listFiltersByNamespaceLabelsAndFields() throws {
        let store = Store()
        try store.create("pods", pod("b", labels: ["app": "web"], node: "node-1"))
        try store.create("pods", pod("a", labels: ["app": "web"], node: "node-2"))
        try store.create("pods", pod("c", namespace: "shop", labels: ["app": "db"], node: "node-1"))
        #expect(store.list("pods").items.map(\.name) == ["a", "b", "c"])
        #expect(store.list("pods", namespace: "shop").items.map(\.name) == ["c"])
        #expect(store.list("pods", labels: try LabelSelector(parsing: "app=web")).items.map(\.name) == ["a", "b"])
        #expect(store.list("pods", fields: try FieldSelector(parsing: "spec.nodeName=node-1")).items.map(\.name) == ["b", "c"])
        #expect(store.list("pods", fields: try FieldSelector(parsing: "metadata.name=c")).items.map(\.name) == ["c"])
        #expect(store.list("pods").revision == 3)
        #expect(store.list("services").items.isEmpty)
    }

    @Test func timestampsParseWithAnyFractionAndOffset() {
        let whole = Timestamp.parse("2026-11-22T01:37:30Z")!
        #expect(whole.timeIntervalSince1970 == 1_795_311_450)
        #expect(abs(Timestamp.parse("2026-11-22T01:37:30.123456789Z")!.timeIntervalSince(whole) - 0.123456789) < 1e-6)
        #expect(Timestamp.parse("2026-11-22T02:37:30.5+01:00")!.timeIntervalSince(whole) == 0.5)
        #expect(Timestamp.parse(Timestamp.formatNano(whole.addingTimeInterval(0.25)))!.timeIntervalSince(whole) == 0.25)
        #expect(Timestamp.parse("yesterday") == nil)
    }

    @Test func aListByLabelFollowsRelabelsAndDeletes() throws {
        let store = Store()
        for i in 0..<50 { try store.create("pods", pod("p\(i)", labels: ["app": i % 2 == 0 ? "web" : "db", "tier": "x"])) }
        let web = try LabelSelector(parsing: "app=web,tier=x")
        #expect(store.list("pods", labels: web).items.count == 25)
        var moved = try #require(store.get("pods", namespace: "default", name: "p1"))
        moved.labels = ["app": "web", "tier": "x"]
        try store.update("pods", moved)
        var left = try #require(store.get("pods", namespace: "default", name: "p0"))
        left.labels = ["app": "gone"]
        try store.update("pods", left)
        try store.delete("pods", namespace: "default", name: "p2")
        let names = store.list("pods", labels: web).items.map(\.name)
        #expect(names.count == 24 && names.contains("p1") && !names.contains("p0") && !names.contains("p2"))
        #expect(names == names.sorted())
        #expect(store.list("pods", labels: try LabelSelector(parsing: "app in (gone)")).items.map(\.name) == ["p0"])
        #expect(store.list("pods", labels: try LabelSelector(parsing: "app!=web")).items.count == 25)
    }

    @Test func finalizersHoldADeletedObjectUntilTheLastIsRemoved() throws {
        let store = Store()
        var held = pod("held")
        held.finalizers = ["example.com/cleanup", "other"]
        try store.create("pods", held)
        let marked = try store.delete("pods", namespace: "default", name: "held")
        #expect(marked.deletionTimestamp != nil)
        #expect(store.get("pods", namespace: "default", name: "held")?.deletionTimestamp == marked.deletionTimestamp)
        // A second delete changes nothing; an update cannot take deletion back.
        #expect(try store.delete("pods", namespace: "default", name: "held").resourceVersion == marked.resourceVersion)
        try store.modify("pods", namespace: "default", name: "held") { o in
            o["metadata"]?["deletionTimestamp"] = nil
            o.finalizers = ["other"]
        }
        #expect(store.get("pods", namespace: "default", name: "held")?.deletionTimestamp == marked.deletionTimestamp)
        try store.modify("pods", namespace: "default", name: "held") { $0.finalizers = [] }
        #expect(store.get("pods", namespace: "default", name: "held") == nil)
    }

    @Test func gracefulDeletionWaitsForTheFinalDelete() throws {
        let store = Store()
        try store.create("pods", pod("web"))
        let marked = try store.markForDeletion("pods", namespace: "default", name: "web", gracePeriodSeconds: 30)
        #expect(marked[path: "metadata.deletionGracePeriodSeconds"]?.int == 30 && marked.deletionTimestamp != nil)
        // Status writes during the grace period keep it (no finalizers, but the grace is not over).
        try store.modify("pods", namespace: "default", name: "web", part: .status) { $0["status"] = ["phase": "Running"] }
        #expect(store.get("pods", namespace: "default", name: "web") != nil)
        // A longer grace does not extend it, a shorter one shortens it.
        #expect(try store.markForDeletion("pods", namespace: "default", name: "web", gracePeriodSeconds: 60)[path: "metadata.deletionGracePeriodSeconds"]?.int == 30)
        #expect(try store.markForDeletion("pods", namespace: "default", name: "web", gracePeriodSeconds: 5)[path: "metadata.deletionGracePeriodSeconds"]?.int == 5)
        // Only this pod's uid: a newer pod of the same name is not marked.
        #expect(throws: StoreError.self) { try store.markForDeletion("pods", namespace: "default", name: "web", gracePeriodSeconds: 1, uid: "other") }
        try store.delete("pods", namespace: "default", name: "web", uid: marked.uid)
        #expect(store.get("pods", namespace: "default", name: "web") == nil)
    }

    @Test func watchStartsWithStateThenFollowsChanges() async throws {
        let store = Store()
        try store.create("pods", pod("a"))
        let stream = try store.watch(WatchFilter("pods", namespace: "default"))
        try store.create("pods", pod("b"))
        try store.create("pods", pod("other", namespace: "shop"))
        var a = store.get("pods", namespace: "default", name: "a")!
        a.labels = ["x": "1"]
        try store.update("pods", a)
        try store.delete("pods", namespace: "default", name: "b")
        let events = try await next(4, stream)
        #expect(events.map { "\($0.type.rawValue) \($0.object.name) \($0.object.resourceVersion!)" } ==
                ["ADDED a 1", "ADDED b 2", "MODIFIED a 4", "DELETED b 5"])
    }

    @Test func watchResumesFromARevisionOrSays410() async throws {
        let store = Store(historyLimit: 5)
        for i in 1...8 { try store.create("pods", pod("p\(i)")) }
        let resumed = try await next(3, try store.watch(WatchFilter("pods"), from: 5))
        #expect(resumed.map(\.object.name) == ["p6", "p7", "p8"])
        #expect(resumed.allSatisfy { $0.type == .added })
        let error = #expect(throws: StoreError.self) { try store.watch(WatchFilter("pods"), from: 2) }
        #expect(error == .expired(requested: 2, oldest: 3))
        #expect(error?.description == "too old resource version: 2 (3)")
    }

    @Test func selectorTransitionsBecomeAddedAndDeleted() async throws {
        let store = Store()
        let stream = try store.watch(WatchFilter("pods", labels: try LabelSelector(parsing: "app=web")))
        var p = try store.create("pods", pod("x", labels: ["app": "db"]))
        p.labels = ["app": "web"]
        p = try store.update("pods", p)
        p.labels = ["app": "web", "v": "2"]
        p = try store.update("pods", p)
        p.labels = ["app": "db"]
        p = try store.update("pods", p)
        #expect(try await next(3, stream).map(\.type) == [.added, .modified, .deleted])
    }

    @Test func aWatcherThatFallsBehindIsEndedWith410AndOthersGoOn() async throws {
        let store = Store()
        let slow = try store.watch(WatchFilter("pods"), bufferLimit: 3)
        let fine = try store.watch(WatchFilter("pods"))
        for i in 0..<10 { try store.create("pods", pod("p\(i)")) }
        var seen = 0
        do {
            for try await _ in slow { seen += 1 }
            Issue.record("the slow watch should end with an error")
        } catch let error as StoreError {
            #expect(seen == 3)
            guard case .expired = error else { Issue.record("\(error)"); return }
        }
        #expect(try await next(10, fine).count == 10)
    }

    @Test func endedWatchesAreDropped() async throws {
        let store = Store()
        do {
            let stream = try store.watch(WatchFilter("pods"))
            try store.create("pods", pod("a"))
            _ = try await next(1, stream)
        }
        try store.create("pods", pod("b"))  // prunes the ended watcher
        #expect(store.watchCount == 0)
    }

    @Test func concurrentCreatesGetDistinctRevisions() async throws {
        let store = Store()
        try await withThrowingTaskGroup(of: Int64.self) { group in
            for i in 0..<200 { group.addTask { try store.create("pods", pod("p\(i)")).resourceVersion! } }
            var revisions: Set<Int64> = []
            for try await r in group { revisions.insert(r) }
            #expect(revisions == Set(1...200))
        }
    }
}

@Suite struct StorePersistenceTests {
    @Test func acknowledgedWritesSurviveAReopenWithoutClose() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let store = try Store(directory: dir)
            try store.create("pods", pod("a"))
            var b = try store.create("pods", pod("b"))
            b.labels = ["v": "2"]
            try store.update("pods", b)
            try store.delete("pods", namespace: "default", name: "a")
            // No close, no flush: like kill -9, the process just stops using it.
        }
        let again = try Store(directory: dir)
        #expect(again.revision == 4)
        #expect(again.list("pods").items.map(\.name) == ["b"])
        #expect(again.get("pods", namespace: "default", name: "b")?.labels == ["v": "2"])
        #expect(try again.create("pods", pod("c")).resourceVersion == 5)
    }

    /// A watch resumes across a restart from any revision the log still holds (an informer does
    /// not re-list after an API-server restart); before the snapshot it gets 410.
    @Test func watchesResumeAcrossARestartFromTheLog() async throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let store = try Store(directory: dir)
            try store.create("pods", pod("a"))                              // 1
            var b = try store.create("pods", pod("b"))                      // 2
            b.labels = ["v": "2"]
            try store.update("pods", b)                                     // 3
            try store.delete("pods", namespace: "default", name: "a")       // 4
        }
        let again = try Store(directory: dir)
        let events = try await next(2, again.watch(WatchFilter("pods"), from: 2))
        #expect(events.map { "\($0.type.rawValue) \($0.object.name) \($0.object.resourceVersion ?? 0)" } == ["MODIFIED b 3", "DELETED a 4"])
        // A label selector sees b enter it at 3, from the old and new objects the log gave back.
        let selected = try again.watch(WatchFilter("pods", labels: try LabelSelector(parsing: "v=2")), from: 1)
        #expect(try await next(1, selected).map { "\($0.type.rawValue) \($0.object.name)" } == ["ADDED b"])

        // After a compaction the snapshot is the oldest point: older revisions are 410.
        let dir2 = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir2) }
        do {
            let store = try Store(directory: dir2, compactAfterBytes: 1)
            try store.create("pods", pod("a"))
            try store.create("pods", pod("b"))
        }
        let compacted = try Store(directory: dir2)
        #expect(throws: StoreError.self) { try compacted.watch(WatchFilter("pods"), from: 1) }
        _ = try compacted.watch(WatchFilter("pods"), from: 2)  // the snapshot itself is a point to resume from
    }

    @Test func aTornLastLineIsDropped() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let store = try Store(directory: dir)
            try store.create("pods", pod("a"))
        }
        let log = FileHandle(forUpdatingAtPath: "\(dir)/log.jsonl")!
        try log.seekToEnd()
        try log.write(contentsOf: Data(#"{"revision":2,"resource":"pods","object":{"meta"#.utf8))
        try log.close()
        let again = try Store(directory: dir)
        #expect(again.revision == 1)
        #expect(try again.create("pods", pod("b")).resourceVersion == 2)
        #expect(try Store(directory: dir).list("pods").items.map(\.name) == ["a", "b"])
    }

    @Test func compactionWritesASnapshotAndEmptiesTheLog() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let store = try Store(directory: dir, compactAfterBytes: 2_000)
            for i in 0..<40 { try store.create("pods", pod("p\(i)")) }
            for i in 0..<20 { try store.delete("pods", namespace: "default", name: "p\(i)") }
        }
        #expect(FileManager.default.fileExists(atPath: "\(dir)/snapshot.jsonl"))
        let logSize = (try FileManager.default.attributesOfItem(atPath: "\(dir)/log.jsonl")[.size] as? Int) ?? 0
        #expect(logSize < 2_000)
        let again = try Store(directory: dir)
        #expect(again.revision == 60)
        #expect(again.list("pods").items.map(\.name) == (20..<40).map { "p\($0)" }.sorted())
    }

    @Test func theDataIsTheServersAloneAndCompactionNeverLeavesItWithoutASnapshot() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let mode = { (path: String) in ((try? FileManager.default.attributesOfItem(atPath: path)[.posixPermissions]) as? Int) ?? -1 }
        do {
            let store = try Store(directory: dir, compactAfterBytes: 1_000)
            for i in 0..<30 { try store.create("pods", pod("p\(i)")) }
        }
        #expect(mode(dir) == 0o700)
        #expect(mode("\(dir)/log.jsonl") == 0o600)
        #expect(mode("\(dir)/snapshot.jsonl") == 0o600)
        // A directory an earlier version left readable is closed at the next start.
        chmod(dir, 0o755)
        chmod("\(dir)/log.jsonl", 0o644)
        let again = try Store(directory: dir, compactAfterBytes: 1_000)
        #expect(mode(dir) == 0o700 && mode("\(dir)/log.jsonl") == 0o600)
        // Compacting again replaces the snapshot in place: no temporary is left, nothing lost.
        for i in 30..<60 { try again.create("pods", pod("p\(i)")) }
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/snapshot.jsonl.tmp"))
        #expect(try Store(directory: dir).list("pods").items.count == 60)
    }
}
