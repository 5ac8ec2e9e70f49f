import Foundation
import KemuAPI
import KemuClient
import KemuTestSupport
import Testing

/// DELETE on a collection, as the python client's `delete_collection_namespaced_*` sends it.
@Suite struct DeleteCollectionTests {
    @Test func aCollectionDeleteTakesWhatItsSelectorsMatchAndNothingElse() async throws {
        let server = try ServerProcess(insecure: true)
        defer { server.stop() }
        let client = try server.client()
        for (name, app) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
            var map: JSON = ["apiVersion": "v1", "kind": "ConfigMap", "data": ["k": "v"]]
            map.name = name
            map.namespace = "default"
            map.labels = ["app": app]
            _ = try await client.create(APIResources.configMaps, map)
        }
        let (code, body) = try await send(client, "DELETE", "/api/v1/namespaces/default/configmaps?labelSelector=app%3Da")
        #expect(code == 200, "\(body)")
        let answer = try JSON.parse(Array(body.utf8))
        #expect(answer["kind"]?.string == "ConfigMapList")
        #expect((answer["items"]?.array ?? []).map(\.name).sorted() == ["a1", "a2"])
        let left = try await client.list(APIResources.configMaps, namespace: "default").items.map(\.name).sorted()
        #expect(left == ["b1", "kube-root-ca.crt"] || left == ["b1"], "\(left)")

        // A dry run deletes nothing; namespaces have no deletecollection, as upstream.
        let dry = try await send(client, "DELETE", "/api/v1/namespaces/default/configmaps", body: Array(#"{"dryRun":["All"]}"#.utf8))
        let kept = try await client.list(APIResources.configMaps, namespace: "default").items.contains { $0.name == "b1" }
        #expect(dry.code == 200 && kept, "\(dry.body)")
        #expect(try await send(client, "DELETE", "/api/v1/namespaces").code == 405)
        #expect(try await send(client, "DELETE", "/api/v1/namespaces/default/configmaps?labelSelector=%21%21").code == 400)
    }
}
