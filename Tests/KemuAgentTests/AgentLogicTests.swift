import Glibc
import KemuAPI
import KemuSystem
@testable import KemuAgent
import Testing

/// What the node agent decides, without pods: restart back-off, probe verdicts, probe specs,
/// and the pod status it reports.
@Suite struct RestartBackoffTests {
    @Test func firstAtOnceThenTenSecondsDoublingToFiveMinutes() {
        var backoff = RestartBackoff()
        let pauses = (0..<8).map { _ in backoff.pause(ranFor: .seconds(1)) }
        #expect(pauses == [.zero, .seconds(10), .seconds(20), .seconds(40), .seconds(80), .seconds(160), .seconds(300), .seconds(300)])
    }

    @Test func aContainerThatRanTenMinutesStartsOver() {
        var backoff = RestartBackoff()
        for _ in 0..<4 { _ = backoff.pause(ranFor: .seconds(5)) }
        #expect(backoff.pause(ranFor: .seconds(601)) == .zero)
        #expect(backoff.pause(ranFor: .seconds(1)) == .seconds(10))
        // One that never started keeps its back-off.
        #expect(backoff.pause(ranFor: nil) == .seconds(20))
    }
}

@Suite struct ProbeTests {
    static let container: JSON = ["name": "web", "ports": [["name": "http", "containerPort": 8080]]]

    func probe(_ spec: JSON) -> Probe? { Probe(spec, container: Self.container) }

    @Test func upstreamDefaults() throws {
        let p = try #require(probe(["tcpSocket": ["port": 9000]]))
        #expect(p.kind == "tcp")
        #expect((p.initialDelay, p.period, p.timeout) == (.zero, .seconds(10), .seconds(1)))
        #expect((p.successThreshold, p.failureThreshold) == (1, 3))
    }

    @Test func namedPortsHeadersAndExec() throws {
        let http = try #require(probe(["httpGet": ["port": "http", "path": "/readyz", "httpHeaders": [["name": "X-A", "value": "1"]]]]))
        guard case let .http(port, path, scheme, headers) = http.action else { Issue.record("not http: \(http.action)"); return }
        #expect(port == 8080 && path == "/readyz" && scheme == "HTTP" && headers.map(\.0) == ["X-A"])
        let exec = try #require(probe(["exec": ["command": ["cat", "/tmp/healthy"]]]))
        #expect(exec.kind == "exec")
    }

    @Test func nonsenseIsClampedOrRefused() throws {
        let p = try #require(probe(["tcpSocket": ["port": 1], "periodSeconds": -5, "timeoutSeconds": 0, "failureThreshold": -1, "successThreshold": 0,
                                    "initialDelaySeconds": -3]))
        #expect((p.initialDelay, p.period, p.timeout) == (.zero, .seconds(1), .seconds(1)))
        #expect((p.successThreshold, p.failureThreshold) == (1, 1))
        #expect(probe(["httpGet": ["port": "nope"]]) == nil)
        #expect(probe(["exec": ["command": []]]) == nil)
        #expect(probe([:]) == nil)
        #expect(Probe(nil, container: Self.container) == nil)
    }

    @Test func verdictsNeedThresholdsInARowAndAreToldOnce() throws {
        var v = ProbeVerdicts(try #require(probe(["tcpSocket": ["port": 1], "failureThreshold": 3, "successThreshold": 2])))
        #expect(v.record(passed: false) == nil)
        #expect(v.record(passed: false) == nil)
        #expect(v.record(passed: true) == nil, "a pass breaks the run of failures")
        #expect([false, false, false].map { v.record(passed: $0) } == [nil, nil, false])
        #expect(v.record(passed: false) == nil, "already failed: not told again")
        #expect(v.record(passed: true) == nil, "one pass of the two needed")
        #expect(v.record(passed: true) == true)
        #expect(v.record(passed: true) == nil)
        #expect(v.verdict == true)
    }
}

@Suite struct PodStatusTests {
    @Test func phaseFollowsKubelet() {
        let phase = { (policy: String, exits: [Int64?], started: Bool) in PodWorker.phase(restartPolicy: policy, exitCodes: exits, allStarted: started) }
        #expect(phase("Always", [nil, nil], false) == "Pending")
        #expect(phase("Always", [nil, nil], true) == "Running")
        #expect(phase("Always", [0, 1], true) == "Running", "Always restarts: never Succeeded or Failed")
        #expect(phase("Never", [0, 0], true) == "Succeeded")
        #expect(phase("Never", [0, 3], true) == "Failed")
        #expect(phase("Never", [0, nil], true) == "Running", "one still runs")
        #expect(phase("OnFailure", [0, 0], true) == "Succeeded")
        #expect(phase("OnFailure", [0, 2], true) == "Running", "the failed one restarts")
        #expect(phase("Never", [], true) == "Pending")
    }

    @Test func aConditionKeepsItsTransitionTimeUntilItFlips() {
        let previous: [JSON] = [["type": "Ready", "status": "True", "lastTransitionTime": "2026-12-01T00:00:00Z"]]
        let same = PodWorker.condition("Ready", true, previous: previous, now: "2026-12-04T10:00:00Z")
        #expect(same["lastTransitionTime"]?.string == "2026-12-01T00:00:00Z")
        let flipped = PodWorker.condition("Ready", false, reason: "ContainersNotReady", previous: previous, now: "2026-12-04T10:00:00Z")
        #expect(flipped["lastTransitionTime"]?.string == "2026-12-04T10:00:00Z")
        #expect(flipped["reason"]?.string == "ContainersNotReady" && flipped["status"]?.string == "False")
        // Unchanged inputs give an equal condition, so the worker's status diff finds nothing to write.
        #expect(PodWorker.condition("Ready", true, previous: previous, now: "later") == same)
        #expect(PodWorker.condition("Initialized", true, previous: previous, now: "t")["lastTransitionTime"]?.string == "t")
    }
}

/// images.yaml's `user`: the image's USER, checked as it is read.
@Suite struct ImageUserTests {
    @Test func anImageNamesItsUserOrRunsAsNobody() throws {
        let catalog = try ImageCatalog.parse("""
            nginx: {command: [nginx], user: 0}
            app: {command: [app], user: "1000:2000"}
            plain: {command: [sleep]}
            """, source: "images.yaml", kemuExecutable: "/bin/true")
        #expect(catalog.lookup("nginx")?.user?.uid == 0 && catalog.lookup("nginx")?.user?.gid == nil)
        #expect(catalog.lookup("app")?.user?.uid == 1000 && catalog.lookup("app")?.user?.gid == 2000)
        #expect(catalog.lookup("plain")?.user == nil && ImageCatalog.defaultUser == (65534, 65534))
        for bad in ["-1", "root", "1:x", "1:2:3", "4294967295", "99999999999999999999"] {
            #expect(throws: (any Error).self, "\(bad)") {
                try ImageCatalog.parse("x: {command: [sh], user: \"\(bad)\"}", source: "images.yaml", kemuExecutable: "/bin/true")
            }
        }
    }
}

/// Image semantics as a real runtime's: the pod's command replaces the entrypoint, its args the
/// default arguments; an image may have only default arguments (busybox: `sh`).
@Suite struct ImageArgvTests {
    @Test func commandReplacesTheEntrypointArgsTheDefaults() throws {
        let catalog = try ImageCatalog.parse("""
            busybox: {args: [sh]}
            server: {command: [sleep], args: ["3600"]}
            """, source: "images.yaml", kemuExecutable: "/bin/true")
        let path = "/usr/bin:/bin"
        #expect(try catalog.argv(image: "busybox", command: nil, args: nil, path: path) == ["sh"])
        #expect(try catalog.argv(image: "busybox", command: nil, args: ["sh", "-c", "echo hi"], path: path) == ["sh", "-c", "echo hi"])
        #expect(try catalog.argv(image: "docker.io/library/busybox:1.36", command: ["echo"], args: ["x"], path: path) == ["echo", "x"])
        #expect(try catalog.argv(image: "server", command: nil, args: ["1"], path: path) == ["sleep", "1"])
        #expect(try catalog.argv(image: "server", command: ["echo"], args: nil, path: path) == ["echo"], "command alone drops the defaults")
        #expect(throws: (any Error).self) { try catalog.argv(image: "busybox", command: nil, args: [], path: path) }
        #expect(throws: (any Error).self) { try ImageCatalog.parse("x: {user: 0}", source: "images.yaml", kemuExecutable: "/bin/true") }
    }
}

/// kubelet's AtomicWriter as the agent writes a ConfigMap's or Secret's files: each version
/// whole, keys that went gone, the downward API's label format.
@Suite struct VolumeWriterTests {
    @Test func versionsReplaceEachOtherWhole() throws {
        let dir = "/tmp/kemu-volume-writer-\(getpid())"
        defer { try? FileSystem.removeTree(dir) }
        try VolumeWriter.write(["a": (Array("1".utf8), 0o644), "nested/b": (Array("2".utf8), 0o400)], to: dir, owner: nil, group: nil)
        #expect(VolumeWriter.current(dir) == ["a": Array("1".utf8), "nested/b": Array("2".utf8)])
        #expect(try FileSystem.readFile("\(dir)/nested/b") == "2")
        try VolumeWriter.write(["a": (Array("3".utf8), 0o644)], to: dir, owner: nil, group: nil)
        #expect(VolumeWriter.current(dir) == ["a": Array("3".utf8)])
        #expect(!FileSystem.exists("\(dir)/nested"))
        // One version on disk: the old one went once `..data` moved.
        #expect(FileSystem.list(dir).filter { $0.hasPrefix("..") && $0 != "..data" }.count == 1)
    }

    @Test func labelsAsTheDownwardAPIWritesThem() {
        #expect(PodWorker.formatMap(["b": "two", "a": "say \"hi\"\n"]) == "a=\"say \\\"hi\\\"\\n\"\nb=\"two\"")
    }
}
