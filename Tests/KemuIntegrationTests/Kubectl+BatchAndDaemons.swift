import Foundation
import KemuTestSupport
import Testing

/// CronJobs and DaemonSets as kubectl users make them: `kubectl create cronjob` (protobuf),
/// `kubectl create job --from=cronjob/…`, a DaemonSet applied from YAML placing a pod per node.
extension KubectlTests {
    @Test func cronJobsAndDaemonSetsThroughKubectl() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        #expect(try server.kubectl(["create", "cronjob", "nightly", "--image=busybox", "--schedule=0 3 * * *", "--", "echo", "hi"]).out
            == "cronjob.batch/nightly created\n")
        let row = try server.kubectl(["get", "cronjobs", "--no-headers"]).out.split(separator: " ").filter { !$0.isEmpty }
        #expect(row.prefix(5).joined(separator: " ") == "nightly 0 3 * * * <none> False 0".split(separator: " ").prefix(5).joined(separator: " "))
        #expect(try server.kubectl(["get", "cj", "nightly", "-o", "jsonpath={.spec.concurrencyPolicy} {.spec.successfulJobsHistoryLimit} {.spec.jobTemplate.spec.template.spec.restartPolicy}"]).out
            == "Allow 3 OnFailure")

        #expect(try server.kubectl(["create", "job", "manual", "--from=cronjob/nightly"]).out == "job.batch/manual created\n")
        #expect(try server.kubectl(["get", "job", "manual", "-o", "jsonpath={.metadata.ownerReferences[0].kind} {.metadata.annotations.cronjob\\.kubernetes\\.io/instantiate}"]).out
            == "CronJob manual")

        let bad = try server.kubectl(["create", "cronjob", "bad", "--image=busybox", "--schedule=61 * * * *"])
        #expect(bad.code != 0 && bad.out.contains(#"spec.schedule: Invalid value: "61 * * * *": minute 61 out of range (0-59)"#), "\(bad.out)")
        let zone = try server.kubectl(["apply", "-f", "-"], stdin: """
            apiVersion: batch/v1
            kind: CronJob
            metadata: {name: zoned}
            spec:
              schedule: "@daily"
              timeZone: Mars/Olympus_Mons
              jobTemplate: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}}}}
            """)
        #expect(zone.code != 0 && zone.out.contains("spec.timeZone: Invalid value: \"Mars/Olympus_Mons\": unknown time zone"), "\(zone.out)")
        // What kemu does not honour is refused, naming the field, never ignored.
        let perIndex = try server.kubectl(["apply", "-f", "-"], stdin: """
            apiVersion: batch/v1
            kind: Job
            metadata: {name: per-index}
            spec:
              completionMode: Indexed
              completions: 2
              backoffLimitPerIndex: 1
              podFailurePolicy: {rules: [{action: FailJob, onExitCodes: {operator: In, values: [42]}}]}
              template: {spec: {restartPolicy: OnFailure, containers: [{name: c, image: busybox}]}}
            """)
        #expect(perIndex.out.contains("spec.backoffLimitPerIndex: Forbidden: kemu does not honour backoffLimitPerIndex yet"), "\(perIndex.out)")
        #expect(perIndex.out.contains(#"spec.template.spec.restartPolicy: Invalid value: "OnFailure": only "Never" is supported when podFailurePolicy is specified"#),
                "\(perIndex.out)")

        for node in ["n1", "n2"] {
            try server.kubectl(["apply", "-f", "-"], stdin: "apiVersion: v1\nkind: Node\nmetadata: {name: \(node)}\n")
        }
        #expect(try server.kubectl(["apply", "-f", "-"], stdin: """
            apiVersion: apps/v1
            kind: DaemonSet
            metadata: {name: agent}
            spec:
              selector: {matchLabels: {app: agent}}
              template:
                metadata: {labels: {app: agent}}
                spec: {containers: [{name: a, image: kemu/echo}]}
            """).out == "daemonset.apps/agent created\n")
        var placed = ""
        for _ in 0..<100 {
            placed = try server.kubectl(["get", "pods", "-l", "app=agent", "-o", "jsonpath={range .items[*]}{.spec.nodeName} {end}"]).out
            if placed.split(separator: " ").count == 2 { break }
            Thread.sleep(forTimeInterval: 0.1)
        }
        #expect(placed.split(separator: " ").sorted() == ["n1", "n2"], "a pod per node: \(placed)")
        #expect(try server.kubectl(["get", "ds", "agent", "-o", "jsonpath={.spec.updateStrategy.rollingUpdate.maxUnavailable} {.spec.revisionHistoryLimit}"]).out == "1 10")
        #expect(try server.kubectl(["rollout", "history", "ds/agent"]).out.contains("1         <none>"))
        let restart = try server.kubectl(["apply", "-f", "-"], stdin: """
            apiVersion: apps/v1
            kind: DaemonSet
            metadata: {name: never}
            spec:
              selector: {matchLabels: {app: never}}
              template:
                metadata: {labels: {app: never}}
                spec: {restartPolicy: Never, containers: [{name: a, image: kemu/echo}]}
            """)
        #expect(restart.out.contains(#"spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always""#), "\(restart.out)")
    }

    /// What every cluster has and says: the system PriorityClasses (which stay), a Service's
    /// empty load-balancer status, the default IngressClass given to an Ingress without one.
    @Test func systemClassesServiceStatusAndDefaultIngressClass() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        #expect(try server.kubectl(["get", "priorityclasses", "-o", "name"]).out
            == "priorityclass.scheduling.k8s.io/system-cluster-critical\npriorityclass.scheduling.k8s.io/system-node-critical\n")
        let delete = try server.kubectl(["delete", "priorityclass", "system-node-critical"])
        #expect(delete.code != 0 && delete.out.contains("is a system priority class and cannot be deleted"), "\(delete.out)")
        #expect(try server.kubectl(["create", "service", "clusterip", "web", "--tcp=80:8080"]).code == 0)
        #expect(try server.kubectl(["get", "service", "web", "-o", "jsonpath={.status}"]).out == #"{"loadBalancer":{}}"#)
        try server.kubectl(["apply", "-f", "-"], stdin: """
            apiVersion: networking.k8s.io/v1
            kind: IngressClass
            metadata: {name: house, annotations: {ingressclass.kubernetes.io/is-default-class: "true"}}
            spec: {controller: example.com/ingress}
            """)
        #expect(try server.kubectl(["create", "ingress", "plain", "--rule=a.example.com/=web:80"]).code == 0)
        #expect(try server.kubectl(["create", "ingress", "chosen", "--class=other", "--rule=b.example.com/=web:80"]).code == 0)
        #expect(try server.kubectl(["get", "ingress", "plain", "chosen", "-o", "jsonpath={.items[*].spec.ingressClassName}"]).out == "house other")
    }

    /// `kubectl explain` finds every served kind and walks its fields, with upstream's type names
    /// for the structures users know and typed leaves (no descriptions: kemu publishes the
    /// structure it validates).
    @Test func explainWalksTheServedKinds() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let pod = try server.kubectl(["explain", "pod.spec"])
        #expect(pod.code == 0 && pod.out.contains("FIELD: spec <PodSpec>") && pod.out.contains("  containers\t<[]Container>")
                && pod.out.contains("  hostNetwork\t<boolean>") && pod.out.contains("  terminationGracePeriodSeconds\t<integer>"), "\(pod.out)")
        let container = try server.kubectl(["explain", "deployment.spec.template.spec.containers"])
        #expect(container.out.contains("  env\t<[]EnvVar>") && container.out.contains("  livenessProbe\t<Probe>")
                && container.out.contains("  command\t<[]string>"), "\(container.out)")
        let event = try server.kubectl(["explain", "events", "--api-version=events.k8s.io/v1"])
        #expect(event.out.contains("  note\t<string>") && event.out.contains("  regarding\t<Object>"), "\(event.out)")
        let probe = try server.kubectl(["explain", "deployment.spec.template.spec.containers.readinessProbe.httpGet"])
        #expect(probe.code == 0 && probe.out.contains("FIELD: httpGet"), "\(probe.out)")
        for kind in ["cronjob.spec.jobTemplate", "daemonset.spec.updateStrategy", "limitrange.spec.limits", "job.spec.podFailurePolicy"] {
            let explained = try server.kubectl(["explain", kind])
            #expect(explained.code == 0, "\(kind): \(explained.out)")
        }
    }
}
