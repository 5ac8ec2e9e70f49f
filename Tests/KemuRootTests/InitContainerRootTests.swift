import Foundation
import Testing

/// Init containers run in order, each to success, before the app starts (kubectl shows Init:N/M);
/// a failing one fails a Never pod (Init:Error) and is retried with back-off otherwise.
@Suite(.serialized, .enabled(if: isRoot, "creates network namespaces: run as root"))
struct InitContainerRootTests {
    static let pods = """
    apiVersion: v1
    kind: Pod
    metadata: {name: staged}
    spec:
      initContainers:
      - {name: first, image: busybox, args: [sh, -c, 'echo first at $(date +%s%N)']}
      - {name: second, image: busybox, args: [sh, -c, 'sleep 15; echo second at $(date +%s%N)']}
      containers:
      - {name: app, image: busybox, args: [sh, -c, 'echo app at $(date +%s%N); sleep 3600']}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: doomed}
    spec:
      restartPolicy: Never
      initContainers: [{name: check, image: busybox, args: [sh, -c, 'echo no database; exit 1']}]
      containers: [{name: app, image: busybox, args: [sh, -c, 'echo never printed']}]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: retrying}
    spec:
      initContainers: [{name: wait, image: busybox, args: [sh, -c, 'exit 2']}]
      containers: [{name: app, image: busybox, args: [sh, -c, 'sleep 3600']}]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: sided}
    spec:
      restartPolicy: Never
      initContainers: [{name: shipper, image: busybox, restartPolicy: Always, args: [sh, -c, 'echo shipping; sleep 1; exit 1']}]
      containers: [{name: app, image: busybox, args: [sh, -c, 'sleep 3600']}]
    """

    func status(_ c: TestCluster, _ pod: String) async throws -> String {
        try await c.kubectl(["get", "pod", pod, "--no-headers"]).output.split(separator: " ").filter { !$0.isEmpty }.dropFirst(2).first
            .map(String.init) ?? ""
    }

    @Test func initContainersRunInOrderBeforeTheApp() async throws {
        let c = TestCluster("rinit")
        defer { c.release() }
        #expect(try await c.up().status == .exited(0))
        #expect(try await c.kubectl(["apply"], stdin: Self.pods).status == .exited(0))

        // While the second runs: Init:1/2, Pending, not Initialized, the first Completed.
        // (kubectl's column read in the same poll: read after it, a loaded run once found the
        // second already done; and with the second running 8 s, a loaded CI's polls and status
        // posts missed it: 15 s.)
        var seen = ""
        let during = try await eventually(25) {
            seen = try await c.jsonpath("pod/staged", "{.status.phase} {.status.conditions[?(@.type=='Initialized')].status} {.status.initContainerStatuses[0].state.terminated.reason} {.status.initContainerStatuses[1].started}")
            guard seen == "Pending False Completed true" else { return false }
            seen += ", kubectl: " + (try await status(c, "staged"))
            return seen.hasSuffix("kubectl: Init:1/2")
        }
        #expect(during, "the second runs after the first: \(seen)")
        #expect(try await eventually(30) { try await status(c, "staged") == "Running" })
        let times = try await ["first", "second", "app"].asyncMap { name in
            try await c.kubectl(["logs", "staged", "-c", name]).output.split(separator: " ").last.flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0
        }
        #expect(times[0] > 0 && times[0] < times[1] && times[1] < times[2], "in order: \(times)")
        #expect(try await c.jsonpath("pod/staged", "{.status.initContainerStatuses[*].state.terminated.reason}") == "Completed Completed")

        #expect(try await eventually(20) { try await status(c, "doomed") == "Init:Error" })
        #expect(try await c.jsonpath("pod/doomed", "{.status.phase}") == "Failed")
        #expect(try await c.kubectl(["logs", "doomed", "-c", "check"]).output == "no database\n")
        #expect(try await c.jsonpath("pod/doomed", "{.status.containerStatuses[0].state.waiting.reason}") == "PodInitializing", "the app never ran")

        #expect(try await eventually(30) { try await c.jsonpath("pod/retrying", "{.status.initContainerStatuses[0].restartCount}") >= "1" })
        // Between its failures it is running again (Init:0/1, as kubectl says): a loaded run once
        // looked just then.
        var shown = ""
        #expect(try await eventually(15) {
            shown = try await status(c, "retrying")
            return ["Init:Error", "Init:CrashLoopBackOff"].contains(shown)
        }, "\(shown)")

        // A sidecar that ends is started again, even in a Never pod, while the app runs on.
        #expect(try await eventually(30) { (Int(try await c.jsonpath("pod/sided", "{.status.initContainerStatuses[0].restartCount}")) ?? 0) >= 1 })
        #expect(try await c.jsonpath("pod/sided", "{.status.phase}/{.status.containerStatuses[0].state.running.startedAt}").hasPrefix("Running/20"))
        #expect(try await c.jsonpath("pod/sided", "{.status.initContainerStatuses[0].lastState.terminated.exitCode}") == "1")
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for element in self { out.append(try await transform(element)) }
        return out
    }
}
