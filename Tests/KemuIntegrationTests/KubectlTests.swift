import AsyncHTTPClient
import Foundation
import KemuAPI
import KemuClient
import NIOCore
import KemuTestSupport
import Testing

/// Real kubectl 1.32 against a real `kemu server`, asserting what kubectl prints.
@Suite(.serialized, .enabled(if: haveKubectl, "needs /usr/bin/kubectl"))
struct KubectlTests {
    @Test func versionDiscoveryAndNamespaces() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        #expect(try server.kubectl(["version"]).out.contains("Server Version: v1.32.0-kemu"))
        let ns = try server.kubectl(["get", "namespaces"]).out
        #expect(ns.hasPrefix("NAME              STATUS   AGE\ndefault           Active"))
        // Rows with their columns (widths follow the longest name).
        let rows = try server.kubectl(["api-resources"]).out.split(separator: "\n").map { $0.split(separator: " ").joined(separator: " ") }
        #expect(rows.contains("deployments deploy apps/v1 true Deployment"))
        #expect(rows.contains("endpointslices discovery.k8s.io/v1 true EndpointSlice"))
        #expect(rows.contains("clusterroles rbac.authorization.k8s.io/v1 false ClusterRole"))
        #expect(rows.contains("selfsubjectaccessreviews authorization.k8s.io/v1 false SelfSubjectAccessReview"))
    }

    @Test func createApplyGetScaleExposeDelete() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        #expect(try server.kubectl(["create", "-f", "-"], stdin: replicaSet).out == "replicaset.apps/web created\n")
        let again = try server.kubectl(["create", "-f", "-"], stdin: replicaSet)
        #expect(again.code == 1 && again.out.contains(#"Error from server (AlreadyExists): error when creating "STDIN": replicasets.apps "web" already exists"#))

        #expect(try server.kubectl(["apply", "-f", "-"], stdin: podManifest(tier: "back")).out == "pod/solo created\n")
        #expect(try server.kubectl(["apply", "-f", "-"], stdin: podManifest(tier: "front")).out == "pod/solo configured\n")
        #expect(try server.kubectl(["apply", "-f", "-"], stdin: podManifest(tier: "front")).out == "pod/solo unchanged\n")
        #expect(try server.kubectl(["get", "pod", "solo", "-o", "jsonpath={.metadata.labels.tier}"]).out == "front")

        let wide = try server.kubectl(["get", "rs", "-o", "wide"]).out
        #expect(wide.contains("NAME   DESIRED   CURRENT   READY   AGE   CONTAINERS   IMAGES      SELECTOR"))
        #expect(wide.contains("web    2         2         0"))  // the ReplicaSet controller made two pods (no node: not ready)
        #expect(try server.kubectl(["get", "pods", "-l", "tier=front", "-o", "name"]).out == "pod/solo\n")
        #expect(try server.kubectl(["get", "pods", "-l", "tier=back", "-o", "name"]).out == "")
        let all = try server.kubectl(["get", "pods", "-A"]).out.split(separator: "\n")
        #expect(all.contains { $0.split(separator: " ").prefix(5) == ["default", "solo", "0/1", "Pending", "0"] })
        let yaml = try server.kubectl(["get", "pod", "solo", "-o", "yaml"]).out
        #expect(yaml.contains("imagePullPolicy: IfNotPresent") && yaml.contains("phase: Pending") && yaml.contains("uid: "))

        #expect(try server.kubectl(["scale", "rs", "web", "--replicas=5"]).out == "replicaset.apps/web scaled\n")
        #expect(try server.kubectl(["get", "rs", "web", "-o", "jsonpath={.spec.replicas}"]).out == "5")
        // kubectl pages its lists (--chunk-size, 500 by default): the pages together are the list.
        let whole = try server.kubectl(["get", "pods", "-o", "name", "--chunk-size=0"]).out
        #expect(whole.split(separator: "\n").count == 6)
        #expect(try server.kubectl(["get", "pods", "-o", "name", "--chunk-size=4"]).out == whole)
        #expect(try server.kubectl(["get", "pods", "--chunk-size=4", "--no-headers"]).out.split(separator: "\n").count == 6)
        let page = try JSON.parse(try server.kubectl(["get", "--raw", "/api/v1/namespaces/default/pods?limit=4"]).out)
        #expect(page["items"]?.array?.count == 4 && page[path: "metadata.remainingItemCount"]?.int == 2)
        let token = page[path: "metadata.continue"]?.string ?? ""
        let rest = try JSON.parse(try server.kubectl(["get", "--raw", "/api/v1/namespaces/default/pods?limit=4&continue=\(token)"]).out)
        #expect(rest["items"]?.array?.count == 2 && rest[path: "metadata.continue"] == nil)
        let forged = try server.kubectl(["get", "--raw", "/api/v1/namespaces/default/pods?limit=4&continue=bm90LWEtdG9rZW4"])
        #expect(forged.code == 1 && forged.out.contains("continue: \"bm90LWEtdG9rZW4\" is not a continue token this server gave"))
        #expect(try server.kubectl(["expose", "rs", "web", "--port", "80", "--target-port", "8080"]).out == "service/web exposed\n")
        #expect(try server.kubectl(["get", "svc", "web", "-o", "jsonpath={.spec.selector.app} {.spec.ports[0].targetPort}"]).out == "web 8080")

        #expect(try server.kubectl(["delete", "pod", "solo"]).out == "pod \"solo\" deleted\n")
        let gone = try server.kubectl(["get", "pod", "solo"])
        #expect(gone.code == 1 && gone.out.contains(#"Error from server (NotFound): pods "solo" not found"#))
    }

    @Test func invalidObjectsAreRefusedWithTheirFields() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let bad = """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: bad}
        spec:
          replicas: -1
          selector: {matchLabels: {app: x}}
          template:
            metadata: {labels: {app: other}}
            spec: {containers: [{name: c}]}
        """
        let result = try server.kubectl(["create", "-f", "-"], stdin: bad)
        #expect(result.code == 1)
        #expect(result.out.contains(#"The Deployment "bad" is invalid:"#))
        #expect(result.out.contains("* spec.replicas: Invalid value: -1: must be greater than or equal to 0"))
        #expect(result.out.contains("* spec.template.spec.containers[0].image: Required value"))
        #expect(result.out.contains("`selector` does not match template `labels`"))
        #expect(try server.kubectl(["get", "deploy", "-o", "name"]).out == "")
        let selector = try server.kubectl(["get", "pods", "-l", "a in (b"])
        #expect(selector.code == 1 && selector.out.contains("unable to parse requirement"))
    }

    @Test func watchAndWaitSeeChanges() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        try server.kubectl(["create", "-f", "-"], stdin: podManifest(tier: "back"))
        // kubectl wait follows a watch until the condition holds; the status write comes later.
        let writer = Thread {
            usleep(700_000)
            _ = try? server.kubectl(["patch", "pod", "solo", "--subresource=status", "--type=merge",
                                     "-p", #"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#])
        }
        writer.start()
        let wait = try server.kubectl(["wait", "--for=condition=Ready", "pod/solo", "--timeout=10s"])
        #expect(wait.code == 0 && wait.out == "pod/solo condition met\n")

        let watcher = Thread {
            usleep(500_000)
            _ = try? server.kubectl(["label", "pod", "solo", "seen=yes"])
            _ = try? server.kubectl(["delete", "pod", "solo", "--wait=false"])
        }
        watcher.start()
        let watch = try server.kubectl(["get", "pods", "-w", "--request-timeout=3s"])
        let rows = watch.out.split(separator: "\n").filter { $0.hasPrefix("solo") }
        #expect(rows.count == 3, "\(watch.out)")  // the listed row, the label change, the delete
    }

    @Test func sigtermEndsOpenWatchesAndStops() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let watching = Thread { _ = try? server.kubectl(["get", "pods", "-w"]) }
        watching.start()
        usleep(800_000)  // the watch is open and idle
        let started = Date()
        #expect(server.terminate(), "the server must stop while a watch is open")
        #expect(Date().timeIntervalSince(started) < 5)
    }

    @Test func acknowledgedWritesSurviveKill9() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        #expect(try server.kubectl(["create", "-f", "-"], stdin: replicaSet).code == 0)
        #expect(try server.kubectl(["scale", "rs", "web", "--replicas=3"]).code == 0)
        #expect(try server.kubectl(["create", "namespace", "shop"]).code == 0)
        server.crash()
        try server.start()
        #expect(try server.kubectl(["get", "rs", "web", "-o", "jsonpath={.spec.replicas}"]).out == "3")
        #expect(try server.kubectl(["get", "ns", "shop", "-o", "name"]).out == "namespace/shop\n")
        // Revisions go on from where they were: clients' resourceVersions stay comparable.
        let rv = Int(try server.kubectl(["get", "rs", "web", "-o", "jsonpath={.metadata.resourceVersion}"]).out) ?? 0
        #expect(try server.kubectl(["label", "rs", "web", "after=restart"]).code == 0)
        #expect(Int(try server.kubectl(["get", "rs", "web", "-o", "jsonpath={.metadata.resourceVersion}"]).out) ?? 0 > rv)
    }
}

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

@Suite(.serialized)
struct APIFuzzTests {
    /// Thousands of mutated bodies at every verb: the server answers each with a 2xx or a 4xx Status
    /// (never a 5xx, never silence), and only what it acknowledged is stored.
    @Test func mutatedBodiesGetStatusesAndLeaveTheStoreConsistent() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let client = try server.client()
        let base = Array(#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i"}]}}"#.utf8)
        let alphabet = Array(#"{}[]:,"\-0123456789.aZ_ ~!"#.utf8)
        var created = Set<String>()
        var statuses: [Int: Int] = [:]
        for i in 0..<2500 {
            var body = base
            // A unique, valid name half the time, so some creates succeed.
            if i % 2 == 0 { body = Array(String(decoding: base, as: UTF8.self).replacingOccurrences(of: #""name":"p""#, with: #""name":"p\#(i)""#).utf8) }
            for _ in 0..<Int.random(in: 0...4) {
                let k = Int.random(in: 0..<body.count)
                switch Int.random(in: 0..<3) {
                case 0: body[k] = alphabet.randomElement()!
                case 1: body.remove(at: k)
                default: body.insert(UInt8.random(in: 0...255), at: k)
                }
            }
            let (method, path, type): (String, String, String) = [
                ("POST", "/api/v1/namespaces/default/pods", "application/json"),
                ("PUT", "/api/v1/namespaces/default/pods/p0", "application/json"),
                ("PATCH", "/api/v1/namespaces/default/pods/p0", "application/strategic-merge-patch+json"),
                ("PATCH", "/api/v1/namespaces/default/pods/p0", "application/json-patch+json"),
                ("POST", "/api/v1/namespaces/nowhere/pods", "application/json"),
                ("POST", "/apis/apps/v1/namespaces/default/deployments", "application/json"),
            ].randomElement()!
            let (code, text) = try await send(client, method, path, body: body, contentType: type)
            let data = Data(text.utf8)
            statuses[code, default: 0] += 1
            #expect((200..<500).contains(code), "\(method) \(path) → \(code): \(text)")
            if code >= 400 {
                let status = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
                #expect(status?["kind"] as? String == "Status" && (status?["message"] as? String)?.isEmpty == false)
            }
            if code == 201, method == "POST", path.hasSuffix("/pods"),
               let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
               let name = (o["metadata"] as? [String: Any])?["name"] as? String {
                created.insert(name)
            }
        }
        #expect(statuses[201, default: 0] > 0 && statuses[400, default: 0] > 0)
        let names = try server.kubectl(["get", "pods", "-o", "jsonpath={.items[*].metadata.name}"]).out.split(separator: " ").map(String.init)
        #expect(Set(names) == created)
        #expect(try server.kubectl(["get", "ns", "nowhere"]).code == 1)
    }
}

extension KubectlTests {
    @Test func oversizedBodiesAre413AndNamespaceDeletesPurgeTheirContents() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let client = try server.client()
        let big = String(repeating: "x", count: 4 << 20)
        let (code, text) = try await send(client, "POST", "/api/v1/namespaces/default/configmaps",
                                          body: Array(#"{"metadata":{"name":"big"},"data":{"x":"\#(big)"}}"#.utf8))
        #expect(code == 413)
        #expect(text.contains("RequestEntityTooLarge"))
        #expect(try server.kubectl(["get", "configmaps", "--field-selector=metadata.name!=kube-root-ca.crt", "-o", "name"]).out == "")

        #expect(try server.kubectl(["create", "namespace", "shop"]).code == 0)
        #expect(try server.kubectl(["-n", "shop", "apply", "-f", "-"], stdin: podManifest(tier: "front")).code == 0)
        #expect(try server.kubectl(["delete", "namespace", "shop"]).code == 0)
        #expect(try server.kubectl(["get", "pods", "-A", "-o", "name"]).out == "")
    }
}
