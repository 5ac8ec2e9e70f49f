import Foundation
import KemuTestSupport
import Testing

/// kubectl's --validate: a field the kind does not have is refused (strict, kubectl's default),
/// warned about (warn) or kept quiet (ignore), as upstream's fieldValidation.
extension KubectlTests {
    @Test func unknownFieldsAreRefusedWarnedOrIgnoredAsAsked() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let typo = """
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: settings, lables: {app: web}}
        data: {mode: fast}
        dta: {mode: slow}
        """
        let strict = try server.kubectl(["apply", "-f", "-"], stdin: typo)
        #expect(strict.code == 1 && strict.out.contains(#"unknown field "dta""#) && strict.out.contains(#"unknown field "metadata.lables""#), "\(strict.out)")
        #expect(try server.kubectl(["get", "configmaps", "--field-selector=metadata.name!=kube-root-ca.crt", "-o", "name"]).out == "")
        let warned = try server.kubectl(["apply", "--validate=warn", "-f", "-"], stdin: typo)
        #expect(warned.code == 0 && warned.out.contains(#"Warning: unknown field "dta""#), "\(warned.out)")
        let quiet = try server.kubectl(["replace", "--validate=false", "-f", "-"], stdin: typo)
        #expect(quiet.code == 0 && !quiet.out.contains("Warning"), "\(quiet.out)")
        // What every kind has passes: a whole Deployment and an RBAC binding, strictly.
        #expect(try server.kubectl(["create", "-f", "-"], stdin: replicaSet).code == 0)
        let binding = """
        apiVersion: rbac.authorization.k8s.io/v1
        kind: RoleBinding
        metadata: {name: b, namespace: default, labels: {a: b}, annotations: {note: hello}}
        roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
        subjects: [{kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}]
        """
        #expect(try server.kubectl(["apply", "-f", "-"], stdin: binding).code == 0)
        // A manifest using much of what a pod spec has passes strictly.
        #expect(try server.kubectl(["apply", "--dry-run=server", "-f", "-"], stdin: Self.richDeployment).code == 0)
        // Deep inside a spec, named by its path, as upstream does.
        let deep = replicaSet.replacingOccurrences(of: "name: web\n  labels", with: "name: deep\n  labels")
            .replacingOccurrences(of: "image: kemu/echo", with: "imagee: kemu/echo\n        readinessProbe: {httpGet: {path: /, port: 80, hots: x}}")
            .replacingOccurrences(of: "replicas: 2", with: "replicas: 2\n  replica: 3")
        let refused = try server.kubectl(["apply", "-f", "-"], stdin: deep)
        #expect(refused.code == 1 && refused.out.contains(#"unknown field "spec.template.spec.containers[0].imagee""#)
                && refused.out.contains(#"unknown field "spec.template.spec.containers[0].readinessProbe.httpGet.hots""#)
                && refused.out.contains(#"unknown field "spec.replica""#), "\(refused.out)")
        #expect(try server.kubectl(["get", "replicasets", "deep"]).code != 0, "nothing was created")
        let warnedDeep = try server.kubectl(["apply", "--validate=warn", "-f", "-"],
                                            stdin: deep.replacingOccurrences(of: "imagee:", with: "image:"))
        #expect(warnedDeep.code == 0 && warnedDeep.out.contains(#"Warning: unknown field "spec.replica""#), "\(warnedDeep.out)")
        let bad = try server.kubectl(["get", "--raw", "/api/v1/namespaces/default/configmaps?fieldValidation=Loose"])
        #expect(bad.code == 0)  // a read ignores it
    }

    static let richDeployment = """
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: full, labels: {a: b}, annotations: {note: hi}}
    spec:
      replicas: 2
      revisionHistoryLimit: 3
      selector: {matchLabels: {app: full}, matchExpressions: [{key: app, operator: In, values: [full]}]}
      strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
      template:
        metadata: {labels: {app: full}}
        spec:
          affinity: {podAntiAffinity: {preferredDuringSchedulingIgnoredDuringExecution: []}}
          tolerations: [{key: k, operator: Exists, effect: NoSchedule}]
          topologySpreadConstraints: [{maxSkew: 1, topologyKey: zone, whenUnsatisfiable: ScheduleAnyway}]
          securityContext: {runAsUser: 1000, fsGroup: 2000, seccompProfile: {type: RuntimeDefault}}
          initContainers: [{name: init, image: busybox, command: [sh, -c, "true"]}]
          volumes: [{name: cfg, configMap: {name: cfg}}, {name: tmp, emptyDir: {}}]
          containers:
          - name: app
            image: kemu/echo
            imagePullPolicy: Always
            env: [{name: A, value: b}, {name: P, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
            envFrom: [{configMapRef: {name: cfg}}]
            ports: [{name: http, containerPort: 8080, protocol: TCP}]
            resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {memory: 128Mi}}
            volumeMounts: [{name: cfg, mountPath: /etc/cfg, readOnly: true}]
            livenessProbe: {httpGet: {path: /healthz, port: http, httpHeaders: [{name: X, value: v}]}, initialDelaySeconds: 1}
            readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 2}
            startupProbe: {exec: {command: ["true"]}, failureThreshold: 30}
            lifecycle: {preStop: {sleep: {seconds: 5}}}
            securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
    """
}
