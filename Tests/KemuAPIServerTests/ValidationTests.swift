import Foundation
import KemuAPI
import KemuClient
import KemuTestSupport
import Testing

/// Objects upstream refuses, refused here too with its code and the field at fault (issue 16,
/// item 10, first part), and nothing stored for them.
@Suite(.serialized) struct ValidationTests {
    func refused(_ client: APIClient, _ path: String, _ object: JSON, field: String, code: Int = 422) async throws -> Bool {
        let (status, body) = try await send(client, "POST", path, body: Array(object.text().utf8))
        let ok = status == code && body.contains(field)
        if !ok { Issue.record("\(field): \(status) \(body)") }
        return ok
    }

    static func service(_ spec: JSON) -> JSON {
        ["apiVersion": "v1", "kind": "Service", "metadata": ["name": "web"], "spec": spec]
    }

    @Test func invalidServicesPodsAndWorkloadsAreRefusedNamingTheField() async throws {
        let server = try ServerProcess(insecure: true)
        defer { server.stop() }
        let client = try server.client()
        let services = "/api/v1/namespaces/default/services"
        let port = { (extra: JSON) -> JSON in
            var p: JSON = ["name": "http", "port": 80]
            for (k, v) in extra.object ?? JSONObject() { p[k] = v }
            return p
        }
        #expect(try await refused(client, services, Self.service(["ports": [port([:]), port(["name": "other"])]]), field: "spec.ports[1]"))
        #expect(try await refused(client, services, Self.service(["ports": [port(["targetPort": -1])]]), field: "spec.ports[0].targetPort"))
        #expect(try await refused(client, services, Self.service(["ports": [port(["targetPort": ["a": 1]])]]), field: "spec.ports[0].targetPort"))
        #expect(try await refused(client, services, Self.service(["ports": [port(["protocol": "FOO"])]]), field: "spec.ports[0].protocol"))
        // SCTP is upstream's, but no kemu proxy carries it: refused by name rather than left dead.
        #expect(try await refused(client, services, Self.service(["ports": [port(["protocol": "SCTP"])]]), field: "kemu's node proxies do not carry SCTP"))
        #expect(try await refused(client, services, Self.service(["ports": [port(["nodePort": 30080])]]), field: "spec.ports[0].nodePort"))
        #expect(try await refused(client, services, Self.service(["ports": [port([:])], "externalIPs": ["999.1.1.1"]]), field: "spec.externalIPs[0]"))
        let pod = { (spec: JSON) -> JSON in
            var s: JSON = ["containers": [["name": "c", "image": "kemu/echo"]]]
            for (k, v) in spec.object ?? JSONObject() { s[k] = v }
            return ["apiVersion": "v1", "kind": "Pod", "metadata": ["name": "p"], "spec": s]
        }
        let pods = "/api/v1/namespaces/default/pods"
        #expect(try await refused(client, pods, pod(["restartPolicy": "Sometimes"]), field: "spec.restartPolicy"))
        #expect(try await refused(client, pods, pod(["nodeName": "../../etc"]), field: "spec.nodeName"))
        #expect(try await refused(client, pods, pod(["securityContext": ["runAsUser": -1]]), field: "spec.securityContext.runAsUser"))
        #expect(try await refused(client, pods, pod(["securityContext": ["supplementalGroups": [1, 4_294_967_296]]]),
                                  field: "spec.securityContext.supplementalGroups[1]"))
        #expect(try await refused(client, pods, pod(["containers": [["name": "c", "image": "kemu/echo", "securityContext": ["runAsGroup": "0"]]]]),
                                  field: "spec.containers[0].securityContext.runAsGroup"))
        // Volumes: a path that climbs out, a mount of nothing, a volume with two sources, a bad mode.
        let mounted = { (mount: JSON, volume: JSON) -> JSON in
            pod(["containers": [["name": "c", "image": "kemu/echo", "volumeMounts": [mount]]], "volumes": [volume]])
        }
        #expect(try await refused(client, pods, mounted(["name": "v", "mountPath": "/v", "subPath": "../x"], ["name": "v", "emptyDir": [:]]),
                                  field: "spec.containers[0].volumeMounts[0].subPath"))
        #expect(try await refused(client, pods, mounted(["name": "w", "mountPath": "/v"], ["name": "v", "emptyDir": [:]]),
                                  field: "spec.containers[0].volumeMounts[0].name"))
        #expect(try await refused(client, pods, mounted(["name": "v", "mountPath": "/v"], ["name": "v", "emptyDir": [:], "secret": ["secretName": "s"]]),
                                  field: "spec.volumes[0].secret"))
        #expect(try await refused(client, pods, mounted(["name": "v", "mountPath": "/v"],
                                                        ["name": "v", "configMap": ["name": "c", "items": [["key": "k", "path": "a/../../b"]]]]),
                                  field: "spec.volumes[0].configMap.items[0].path"))
        #expect(try await refused(client, pods, mounted(["name": "v", "mountPath": "/v"], ["name": "v", "secret": ["secretName": "s", "defaultMode": 512]]),
                                  field: "spec.volumes[0].secret.defaultMode"))
        #expect(try await refused(client, pods, mounted(["name": "v", "mountPath": "/v"], ["name": "v", "persistentVolumeClaim": ["claimName": "../../etc"]]),
                                  field: "spec.volumes[0].persistentVolumeClaim.claimName"))
        // A key that would sit among a volume's own `..data` entries, or climb out of it.
        for key in ["..data", "../x", "a/b"] {
            #expect(try await refused(client, "/api/v1/namespaces/default/configmaps",
                                      ["apiVersion": "v1", "kind": "ConfigMap", "metadata": ["name": "c"], "data": [key: "v"]], field: "data[\(key)]"))
        }
        var deployment: JSON = ["apiVersion": "apps/v1", "kind": "Deployment", "metadata": ["name": "d"],
                                "spec": ["selector": ["matchLabels": ["app": "d"]],
                                         "template": ["metadata": ["labels": ["app": "d"]], "spec": ["containers": [["name": "c", "image": "kemu/echo"]]]]]]
        deployment["spec", default: [:]]["replicas"] = .int(1_099_511_627_776)
        #expect(try await refused(client, "/apis/apps/v1/namespaces/default/deployments", deployment, field: "spec.replicas"))
        deployment["spec", default: [:]]["replicas"] = "3"
        #expect(try await refused(client, "/apis/apps/v1/namespaces/default/deployments", deployment, field: "spec.replicas"))
        // Nothing of any of them was stored.
        #expect(try await client.list(APIResources.services, namespace: "default").items.allSatisfy { $0.name != "web" })
        #expect(try await client.list(APIResources.pods, namespace: "default").items.isEmpty)
        #expect(try await client.list(APIResources.deployments, namespace: "default").items.isEmpty)
    }

    @Test func moreReplicasThanTheMachineRunsAreRefusedAtCreateAndScale() async throws {
        let server = try ServerProcess(insecure: true)
        defer { server.stop() }
        let client = try server.client()
        var deployment: JSON = ["apiVersion": "apps/v1", "kind": "Deployment", "metadata": ["name": "huge"],
                                "spec": ["replicas": 100_000, "selector": ["matchLabels": ["app": "h"]],
                                         "template": ["metadata": ["labels": ["app": "h"]], "spec": ["containers": [["name": "c", "image": "kemu/echo"]]]]]]
        let (status, body) = try await send(client, "POST", "/apis/apps/v1/namespaces/default/deployments", body: Array(deployment.text().utf8))
        #expect(status == 422 && body.contains("spec.replicas") && body.contains("this machine"), "\(status) \(body)")
        #expect(try await client.list(APIResources.deployments, namespace: "default").items.isEmpty)
        // Within the budget it is made; scaling it past the budget is refused the same way and changes nothing.
        deployment["spec", default: [:]]["replicas"] = 2
        _ = try await client.create(APIResources.deployments, deployment.withNamespace("default"))
        let scale: JSON = ["apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": ["name": "huge", "namespace": "default"], "spec": ["replicas": 100_000]]
        let (scaled, answer) = try await send(client, "PUT", "/apis/apps/v1/namespaces/default/deployments/huge/scale", body: Array(scale.text().utf8))
        #expect(scaled == 422 && answer.contains("spec.replicas"), "\(scaled) \(answer)")
        let patched = try await send(client, "PATCH", "/apis/apps/v1/namespaces/default/deployments/huge", body: Array(#"{"spec":{"replicas":100000}}"#.utf8),
                                     contentType: "application/merge-patch+json")
        #expect(patched.0 == 422, "\(patched)")
        #expect(try await client.get(APIResources.deployments, namespace: "default", name: "huge")[path: "spec.replicas"]?.int == 2)
    }

    @Test func aServiceTurnedClusterIPDropsTheNodePortsItHad() async throws {
        let server = try ServerProcess(insecure: true)
        defer { server.stop() }
        let client = try server.client()
        let created = try await client.create(APIResources.services, Self.service(["type": "NodePort", "ports": [["name": "http", "port": 80]]])
            .withNamespace("default"))
        #expect(created[path: "spec.ports"]?.array?.first?["nodePort"]?.int != nil)
        var changed = created
        changed["spec", default: [:]]["type"] = "ClusterIP"
        let updated = try await client.update(APIResources.services, changed)
        #expect(updated[path: "spec.type"]?.string == "ClusterIP")
        #expect(updated[path: "spec.ports"]?.array?.first?["nodePort"] == nil, "\(updated.text())")
    }

    @Test func theSystemNamespacesCannotBeDeleted() async throws {
        let server = try ServerProcess(insecure: true)
        defer { server.stop() }
        let client = try server.client()
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let (code, body) = try await send(client, "DELETE", "/api/v1/namespaces/\(name)")
            #expect(code == 403 && body.contains("may not be deleted"), "\(name): \(code) \(body)")
        }
        #expect(try await send(client, "GET", "/api/v1/namespaces/kube-system").code == 200)
    }
}

extension JSON {
    func withNamespace(_ namespace: String) -> JSON {
        var o = self
        o.namespace = namespace
        return o
    }
}

@Suite(.serialized) struct PatchSafetyTests {
    @Test func patchesThatWouldReplaceTheWholeObjectAreRefusedAndLeaveItAsItWas() async throws {
        let server = try ServerProcess(insecure: true)
        defer { server.stop() }
        let client = try server.client()
        let configMaps = APIResources.all.first { $0.resource == "configmaps" }
        let cm = try #require(configMaps)
        var object: JSON = ["apiVersion": "v1", "kind": "ConfigMap", "data": ["key": "value"]]
        (object.name, object.namespace) = ("settings", "default")
        _ = try await client.create(cm, object)
        let path = "/api/v1/namespaces/default/configmaps/settings"
        for (type, body) in [("application/merge-patch+json", "null"), ("application/merge-patch+json", "\"x\""), ("application/merge-patch+json", "[1,2]"),
                             ("application/strategic-merge-patch+json", "null"),
                             ("application/json-patch+json", #"[{"op":"replace","path":"","value":{"metadata":{"name":"settings"}}}]"#)] {
            let (code, text) = try await send(client, "PATCH", path, body: Array(body.utf8), contentType: type)
            #expect(code == 422, "\(type) \(body): \(code) \(text)")
        }
        let after = try await client.get(cm, namespace: "default", name: "settings")
        #expect(after[path: "data.key"]?.string == "value")
    }
}
