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
        let bad = try server.kubectl(["get", "--raw", "/api/v1/namespaces/default/configmaps?fieldValidation=Loose"])
        #expect(bad.code == 0)  // a read ignores it
    }
}
