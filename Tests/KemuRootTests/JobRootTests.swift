import Foundation
import Testing

/// batch/v1 Jobs on a real cluster: pods that run to completion, retries up to backoffLimit,
/// `kubectl create job` (a protobuf body) and `kubectl wait --for=condition=complete`.
@Suite(.serialized, .enabled(if: isRoot, "creates network namespaces: run as root"))
struct JobRootTests {
    static let jobs = """
    apiVersion: batch/v1
    kind: Job
    metadata: {name: count}
    spec:
      completions: 3
      parallelism: 2
      ttlSecondsAfterFinished: 60
      template:
        spec:
          restartPolicy: Never
          containers: [{name: c, image: busybox, command: [sh, -c, 'echo done by $HOSTNAME']}]
    ---
    apiVersion: batch/v1
    kind: Job
    metadata: {name: doomed}
    spec:
      backoffLimit: 1
      template:
        spec:
          restartPolicy: Never
          containers: [{name: c, image: busybox, command: [sh, -c, 'echo failing; exit 3']}]
    ---
    apiVersion: batch/v1
    kind: Job
    metadata: {name: shards}
    spec:
      completions: 3
      parallelism: 3
      completionMode: Indexed
      template:
        spec:
          restartPolicy: Never
          containers: [{name: c, image: busybox, args: [sh, -c, 'echo "shard $JOB_COMPLETION_INDEX on $(hostname)"']}]
    """

    @Test func jobsRunToCompletionOrFailPastTheirBackoffLimit() async throws {
        let c = TestCluster("rjob")
        defer { c.release() }
        #expect(try await c.up().status == .exited(0))
        #expect(try await c.kubectl(["apply"], stdin: Self.jobs).status == .exited(0))
        let imperative = try await c.kubectl(["create", "job", "once", "--image=busybox", "--", "sh", "-c", "echo hello from a job"])
        #expect(imperative.output == "job.batch/once created\n", "\(imperative.output)")

        // Three completions, two at a time; each pod ran to Succeeded and is kept, as upstream keeps them.
        let waited = try await c.kubectl(["wait", "--for=condition=complete", "job/count", "job/once", "--timeout=60s"])
        #expect(waited.status == .exited(0), "\(waited.output)")
        #expect(try await c.jsonpath("job/count", "{.status.succeeded}/{.status.active}/{.status.failed}") == "3/0/0")
        let pods = try await c.jsonpath("pods", "{range .items[?(@.metadata.labels.job-name=='count')]}{.status.phase} {end}")
        #expect(pods == "Succeeded Succeeded Succeeded ", "\(pods)")
        let once = try await c.jsonpath("pods", "{.items[?(@.metadata.labels.job-name=='once')].metadata.name}")
        #expect(try await c.kubectl(["logs", once]).output == "hello from a job\n")
        let table = try await c.kubectl(["get", "job", "count", "--no-headers"]).output.split(separator: " ").prefix(3).joined(separator: " ")
        #expect(table == "count Complete 3/3", "\(table)")

        // Indexed: each pod knows its index (and its hostname says it); the status lists them.
        #expect(try await c.kubectl(["wait", "--for=condition=complete", "job/shards", "--timeout=60s"]).status == .exited(0))
        #expect(try await c.jsonpath("job/shards", "{.status.completedIndexes}") == "0-2")
        var shards: [String] = []
        for pod in try await c.jsonpath("pods", "{range .items[*]}{.metadata.name} {end}").split(separator: " ") where pod.hasPrefix("shards-") {
            shards.append(try await c.kubectl(["logs", String(pod)]).output)
        }
        #expect(shards.sorted() == ["shard 0 on shards-0\n", "shard 1 on shards-1\n", "shard 2 on shards-2\n"], "\(shards)")

        // One failure is allowed, the second fails the Job (after upstream's 10 s back-off).
        let failed = try await c.kubectl(["wait", "--for=condition=failed", "job/doomed", "--timeout=60s"])
        #expect(failed.status == .exited(0), "\(failed.output)")
        #expect(try await c.jsonpath("job/doomed", "{.status.failed}/{.status.conditions[?(@.type=='Failed')].reason}") == "2/BackoffLimitExceeded")
        #expect(try await c.jsonpath("pods", "{.items[?(@.metadata.labels.job-name=='doomed')].status.phase}") == "Failed Failed")

        // A Job whose pods could never finish is refused, naming the field.
        let always = try await c.kubectl(["apply"], stdin: Self.jobs.replacingOccurrences(of: "restartPolicy: Never", with: "restartPolicy: Always"))
        #expect(always.output.contains(#"spec.template.spec.restartPolicy: Unsupported value: "Always": supported values: "OnFailure", "Never""#), "\(always.output)")
        // More pods at once than the machine holds, as for a Deployment's replicas.
        let wide = try await c.kubectl(["apply"], stdin: Self.jobs.replacingOccurrences(of: "parallelism: 2", with: "parallelism: 100000"))
        #expect(wide.output.contains("spec.parallelism: Invalid value: 100000"), "\(wide.output)")
        let forever = try await c.kubectl(["apply"], stdin: Self.jobs.replacingOccurrences(of: "backoffLimit: 1", with: "backoffLimit: 1\n  activeDeadlineSeconds: 9223372036854775807"))
        #expect(forever.output.contains("spec.activeDeadlineSeconds: Invalid value: 9223372036854775807"), "\(forever.output)")
    }
}
