import Foundation
import Testing

/// A pod's environment from ConfigMaps and Secrets, as a user's manifests write it, on a real
/// cluster: values arrive, and a missing source holds the container with kubelet's reason until
/// it is created, never starting it with an empty value.
@Suite(.serialized, .enabled(if: isRoot, "creates network namespaces: run as root"))
struct ConfigurationRootTests {
    static let pods = """
    apiVersion: v1
    kind: Pod
    metadata: {name: reader}
    spec:
      containers:
      - name: c
        image: busybox
        command: [sh, -c, 'echo "$GREETING/$DB_PASSWORD/$APP_MODE/$ME/${MAYBE-unset}"; sleep 3600']
        envFrom: [{configMapRef: {name: app}, prefix: APP_}]
        env:
        - {name: GREETING, valueFrom: {configMapKeyRef: {name: app, key: GREETING}}}
        - {name: DB_PASSWORD, valueFrom: {secretKeyRef: {name: db, key: password}}}
        - {name: ME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: MAYBE, valueFrom: {configMapKeyRef: {name: nowhere, key: x, optional: true}}}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: early}
    spec:
      containers:
      - name: c
        image: busybox
        command: [sh, -c, 'echo "late=$LATE"; sleep 3600']
        env: [{name: LATE, valueFrom: {configMapKeyRef: {name: later, key: x}}}]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: nokey}
    spec:
      containers:
      - name: c
        image: busybox
        command: [sh, -c, 'sleep 3600']
        env: [{name: NOPE, valueFrom: {secretKeyRef: {name: db, key: user}}}]
    """

    @Test func environmentFromConfigMapsAndSecretsOrAClearWait() async throws {
        let c = TestCluster("rconf")
        defer { c.release() }
        #expect(try await c.up().status == .exited(0))
        #expect(try await c.kubectl(["create", "configmap", "app", "--from-literal=GREETING=hello", "--from-literal=MODE=fast"]).status == .exited(0))
        #expect(try await c.kubectl(["create", "secret", "generic", "db", "--from-literal=password=s3cret"]).status == .exited(0))
        #expect(try await c.kubectl(["apply"], stdin: Self.pods).status == .exited(0))

        // Values from both kinds of source, envFrom with its prefix, the downward API, an
        // optional reference to nothing left unset.
        let arrived = try await eventually(15) { try await c.kubectl(["logs", "reader"]).output == "hello/s3cret/fast/reader/unset\n" }
        let logs = try await c.kubectl(["logs", "reader"]).output
        #expect(arrived, "\(logs)")

        // A required source that does not exist yet: held, with kubelet's reason and message.
        let waiting = "{.status.containerStatuses[0].state.waiting.reason}: {.status.containerStatuses[0].state.waiting.message}"
        #expect(try await eventually(10) { try await c.jsonpath("pod/early", waiting) == #"CreateContainerConfigError: configmap "later" not found"# })
        #expect(try await c.jsonpath("pod/early", "{.status.phase}") == "Pending")
        #expect(try await eventually(10) { try await c.jsonpath("pod/nokey", waiting) == "CreateContainerConfigError: couldn't find key user in Secret default/db" })
        let events = try await c.kubectl(["get", "events", "--field-selector", "involvedObject.name=early,reason=Failed", "-o", "jsonpath={.items[0].message}"]).output
        #expect(events == #"Error: configmap "later" not found"#)
        // Created later: the container starts with it, within the retry's 10 s.
        #expect(try await c.kubectl(["create", "configmap", "later", "--from-literal=x=now"]).status == .exited(0))
        #expect(try await eventually(15) { try await c.kubectl(["logs", "early"]).output == "late=now\n" })
        #expect(try await c.jsonpath("pod/early", "{.status.phase}") == "Running")
    }
}
