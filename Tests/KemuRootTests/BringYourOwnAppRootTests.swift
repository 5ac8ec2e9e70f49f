import Foundation
import Testing

/// A web app's manifest as a team would write it, applied in one go: a Secret, a ConfigMap and a
/// ServiceAccount the Deployment uses, its Service, an Ingress (its class from the cluster's
/// default IngressClass), a migration Job and a nightly CronJob. It applies cleanly, the
/// migration runs with the Secret's credentials, and the app answers through its Service by name.
@Suite(.serialized, .enabled(if: isRoot, "creates network namespaces: run as root"))
struct BringYourOwnAppRootTests {
    static let manifest = """
    apiVersion: networking.k8s.io/v1
    kind: IngressClass
    metadata:
      name: kemu
      annotations: {ingressclass.kubernetes.io/is-default-class: "true"}
    spec: {controller: kemu.dev/ingress}
    ---
    apiVersion: v1
    kind: Secret
    metadata: {name: db-credentials, labels: {app: shop}}
    type: Opaque
    stringData: {DB_USER: shopper, DB_PASSWORD: "s3cr3t!"}
    ---
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: shop-config, labels: {app: shop}}
    data: {GREETING: "hello from the config", LOG_LEVEL: debug}
    ---
    apiVersion: v1
    kind: ServiceAccount
    metadata: {name: shop, labels: {app: shop}}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: shop, labels: {app: shop}}
    spec:
      replicas: 2
      selector: {matchLabels: {app: shop, tier: web}}
      template:
        metadata: {labels: {app: shop, tier: web}}
        spec:
          serviceAccountName: shop
          containers:
          - name: web
            image: kemu/echo
            ports: [{name: http, containerPort: 8080}]
            env:
            - name: GREETING
              valueFrom: {configMapKeyRef: {name: shop-config, key: GREETING}}
            - name: POD_NAME
              valueFrom: {fieldRef: {fieldPath: metadata.name}}
            envFrom:
            - secretRef: {name: db-credentials}
            readinessProbe: {httpGet: {path: /readyz, port: http}, periodSeconds: 1}
            resources: {requests: {cpu: 50m, memory: 32Mi}}
            volumeMounts:
            - {name: config, mountPath: /etc/shop}
            - {name: credentials, mountPath: /etc/shop/credentials, readOnly: true}
          volumes:
          - {name: config, configMap: {name: shop-config}}
          - {name: credentials, secret: {secretName: db-credentials, defaultMode: 0400}}
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: shop, labels: {app: shop}}
    spec:
      selector: {app: shop, tier: web}
      ports: [{name: http, port: 80, targetPort: http}]
    ---
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata: {name: shop}
    spec:
      rules:
      - host: shop.example.com
        http:
          paths:
          - {path: /, pathType: Prefix, backend: {service: {name: shop, port: {name: http}}}}
    ---
    apiVersion: batch/v1
    kind: Job
    metadata: {name: shop-migrate}
    spec:
      backoffLimit: 2
      template:
        spec:
          restartPolicy: Never
          serviceAccountName: shop
          containers:
          - name: migrate
            image: busybox
            command: [sh, -c, 'echo "migrating as $DB_USER with a ${#DB_PASSWORD}-character password"']
            envFrom: [{secretRef: {name: db-credentials}}]
    ---
    apiVersion: batch/v1
    kind: CronJob
    metadata: {name: shop-nightly}
    spec:
      schedule: "30 2 * * *"
      timeZone: Europe/Paris
      concurrencyPolicy: Forbid
      jobTemplate:
        spec:
          template:
            spec:
              restartPolicy: OnFailure
              containers: [{name: report, image: busybox, command: [sh, -c, 'echo nightly report']}]
    """

    @Test func aRealisticManifestAppliesAndItsAppAnswers() async throws {
        let c = TestCluster("rbyo")
        defer { c.release() }
        #expect(try await c.up().status == .exited(0))
        let applied = try await c.kubectl(["apply"], stdin: Self.manifest)
        #expect(applied.status == .exited(0), "\(applied.output)")
        #expect(applied.output.split(separator: "\n").count == 9, "one line per object: \(applied.output)")

        #expect(try await c.kubectl(["rollout", "status", "deploy/shop", "--timeout=60s"]).status == .exited(0))
        let migrated = try await c.kubectl(["wait", "--for=condition=complete", "job/shop-migrate", "--timeout=60s"])
        #expect(migrated.status == .exited(0), "\(migrated.output)")
        #expect(try await c.kubectl(["logs", "job/shop-migrate"]).output == "migrating as shopper with a 7-character password\n")

        // The containers got the ConfigMap's and the Secret's values and their ServiceAccount.
        let env = try await c.kubectl(["exec", "deploy/shop", "--", "sh", "-c", "echo \"$GREETING|$DB_USER|$POD_NAME\""]).output
        #expect(env.hasPrefix("hello from the config|shopper|shop-"), "\(env)")
        // ...and their files, at the paths the manifest names (a Secret's inside a ConfigMap's).
        let files = try await c.kubectl(["exec", "deploy/shop", "--", "sh", "-c", "cat /etc/shop/LOG_LEVEL /etc/shop/credentials/DB_USER"]).output
        #expect(files == "debugshopper", "\(files)")
        #expect(try await c.jsonpath("pods", "{.items[?(@.metadata.labels.tier=='web')].spec.serviceAccountName}") == "shop shop")
        // The Ingress took the default class; the CronJob waits for its time.
        #expect(try await c.jsonpath("ingress/shop", "{.spec.ingressClassName}") == "kemu")
        let cron = try await c.kubectl(["get", "cj", "shop-nightly", "--no-headers"]).output.split(separator: " ").filter { !$0.isEmpty }
        #expect(cron.prefix(10) == ["shop-nightly", "30", "2", "*", "*", "*", "Europe/Paris", "False", "0", "<none>"], "\(cron)")

        // The app answers through its Service, by name, from a pod of the cluster.
        let client = try await c.jsonpath("pods", "{.items[?(@.metadata.labels.tier=='web')].metadata.name}").split(separator: " ").first.map(String.init) ?? ""
        let answer = try await c.kemu(["curl", "--from", client, "http://shop.default.svc.cluster.local/?format=text"])
        #expect(answer.status == .exited(0) && answer.output.hasPrefix("pod=shop-"), "\(answer.output)")
    }
}
