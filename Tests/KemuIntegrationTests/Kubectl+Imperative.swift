import Foundation
import KemuTestSupport
import Testing

/// The first commands of every tutorial: kubectl's imperative `create` subcommands send
/// protobuf bodies and never fall back to JSON, so each must be read whole.
extension KubectlTests {
    @Test func imperativeCreatesOfDeploymentsConfigMapsAndServices() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let json = { (args: [String]) throws -> [String: Any] in
            let out = try server.kubectl(args + ["-o", "json"]).out
            return (try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]) ?? [:]
        }

        #expect(try server.kubectl(["create", "deployment", "web", "--image=kemu/echo", "--replicas=0", "--port=8080"]).out
            == "deployment.apps/web created\n")
        let web = try json(["get", "deployment", "web"])
        let spec = web["spec"] as? [String: Any] ?? [:]
        #expect(spec["replicas"] as? Int == 0, "an explicit 0 survives: replicas is a pointer")
        #expect((spec["selector"] as? [String: Any])?["matchLabels"] as? [String: String] == ["app": "web"])
        #expect((spec["strategy"] as? [String: Any])?["type"] as? String == "RollingUpdate", "strategy: {} is defaulted field by field")
        let container = (((spec["template"] as? [String: Any])?["spec"] as? [String: Any])?["containers"] as? [[String: Any]])?.first ?? [:]
        #expect(container["name"] as? String == "echo" && container["image"] as? String == "kemu/echo")
        #expect((container["ports"] as? [[String: Any]])?.first?["containerPort"] as? Int == 8080)
        #expect(container["stdin"] == nil && container["tty"] == nil, "zero values of value fields are left out, as JSON's omitempty")

        #expect(try server.kubectl(["create", "deployment", "job", "--image=busybox", "--", "sh", "-c", "echo hi"]).out
            == "deployment.apps/job created\n")
        let command = try server.kubectl(["get", "deployment", "job", "-o", "jsonpath={.spec.template.spec.containers[0].command}"]).out
        #expect(command == #"["sh","-c","echo hi"]"#)

        let file = server.dataDir + "/settings.txt"
        try "mode=fast\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try server.kubectl(["create", "configmap", "cfg", "--from-literal=a=1", "--from-literal=b=two words", "--from-file=\(file)"]).out
            == "configmap/cfg created\n")
        #expect(try json(["get", "configmap", "cfg"])["data"] as? [String: String] == ["a": "1", "b": "two words", "settings.txt": "mode=fast\n"])

        for (type, extra) in [("clusterip", ["--tcp=80:8080"]), ("nodeport", ["--tcp=80:8080"]), ("loadbalancer", ["--tcp=80:8080"]),
                              ("externalname", ["--external-name=db.example.com"])] {
            let name = "svc-\(type)"
            #expect(try server.kubectl(["create", "service", type, name] + extra).out == "service/\(name) created\n")
        }
        let services = try server.kubectl(["get", "services", "-o", "custom-columns=NAME:.metadata.name,TYPE:.spec.type,PORT:.spec.ports[0].port,TARGET:.spec.ports[0].targetPort,NODEPORT:.spec.ports[0].nodePort,EXTERNAL:.spec.externalName", "--no-headers"]).out
        let rows = services.split(separator: "\n").map { $0.split(separator: " ").joined(separator: " ") }
        #expect(rows.contains("svc-clusterip ClusterIP 80 8080 <none> <none>"), "\(rows)")
        #expect(rows.contains { $0.hasPrefix("svc-nodeport NodePort 80 8080 3") }, "\(rows)")
        #expect(rows.contains { $0.hasPrefix("svc-loadbalancer LoadBalancer 80 8080 3") }, "\(rows)")
        #expect(rows.contains("svc-externalname ExternalName <none> <none> <none> db.example.com"), "\(rows)")
        #expect(try server.kubectl(["get", "service", "svc-externalname", "--no-headers"]).out.contains("db.example.com"))
    }

    @Test func secretsOfEveryImperativeKindAndTheirRules() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let dir = server.dataDir
        #expect(try server.kubectl(["create", "secret", "generic", "creds", "--from-literal=user=admin", "--from-literal=pass=s3cret"]).out
            == "secret/creds created\n")
        #expect(try server.kubectl(["get", "secret", "creds", "-o", "jsonpath={.data.pass}"]).out == Data("s3cret".utf8).base64EncodedString())
        let tls = try ServerProcess.run("/usr/bin/openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(dir)/t.key",
                                                             "-out", "\(dir)/t.crt", "-subj", "/CN=web", "-days", "1"])
        #expect(tls.code == 0, "\(tls.out)")
        #expect(try server.kubectl(["create", "secret", "tls", "cert", "--cert=\(dir)/t.crt", "--key=\(dir)/t.key"]).out == "secret/cert created\n")
        #expect(try server.kubectl(["create", "secret", "docker-registry", "pull", "--docker-server=registry.example", "--docker-username=u",
                                    "--docker-password=p"]).out == "secret/pull created\n")
        let rows = try server.kubectl(["get", "secrets", "--no-headers"]).out.split(separator: "\n").map { $0.split(separator: " ").dropLast().joined(separator: " ") }
        #expect(rows == ["cert kubernetes.io/tls 2", "creds Opaque 2", "pull kubernetes.io/dockerconfigjson 1"], "\(rows)")

        // stringData is merged into data and never stored; an immutable Secret keeps its data.
        let manifest = { (token: String) in "apiVersion: v1\nkind: Secret\nmetadata: {name: frozen}\nstringData: {token: \(token)}\nimmutable: true\n" }
        #expect(try server.kubectl(["apply", "-f", "-"], stdin: manifest("abc")).out == "secret/frozen created\n")
        #expect(try server.kubectl(["get", "secret", "frozen", "-o", "jsonpath={.data.token}/{.stringData}"]).out == "YWJj/")
        let changed = try server.kubectl(["apply", "-f", "-"], stdin: manifest("xyz"))
        #expect(changed.code == 1 && changed.out.contains("data: Forbidden: field is immutable when `immutable` is set"), "\(changed.out)")
        // A TLS Secret without its key, a key no file could be named: each named.
        let bad = try server.kubectl(["apply", "-f", "-"], stdin: """
            apiVersion: v1
            kind: Secret
            metadata: {name: bad}
            type: kubernetes.io/tls
            data: {"tls.crt": "eA==", "no good": "eA=="}
            """)
        #expect(bad.code == 1 && bad.out.contains("data[tls.key]: Required value") && bad.out.contains("data[no good]: Invalid value"), "\(bad.out)")
        #expect(try server.kubectl(["get", "secret", "bad"]).code == 1)
    }

    @Test func ingressesBudgetsPriorityClassesQuotasAndPoliciesAreServedAndChecked() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let creates: [([String], String)] = [
            (["ingress", "simple", "--rule=foo.com/bar=svc1:8080,tls=my-cert", "--class=default"], "ingress.networking.k8s.io/simple created\n"),
            (["pdb", "web", "--selector=app=web", "--min-available=1"], "poddisruptionbudget.policy/web created\n"),
            (["priorityclass", "high", "--value=1000", "--description=important"], "priorityclass.scheduling.k8s.io/high created\n"),
            (["quota", "small", "--hard=cpu=1,memory=1G,pods=2"], "resourcequota/small created\n"),
        ]
        for (args, out) in creates { #expect(try server.kubectl(["create"] + args).out == out, "\(args)") }
        #expect(try server.kubectl(["get", "ingress", "simple", "-o", "jsonpath={.spec.rules[0].http.paths[0]}"]).out
            == #"{"backend":{"service":{"name":"svc1","port":{"number":8080}}},"path":"/bar","pathType":"Exact"}"#)
        #expect(try server.kubectl(["get", "pdb", "web", "-o", "jsonpath={.spec.minAvailable}"]).out == "1")
        #expect(try server.kubectl(["get", "priorityclass", "high", "-o", "jsonpath={.value}/{.preemptionPolicy}"]).out == "1000/PreemptLowerPriority")
        #expect(try server.kubectl(["get", "quota", "small", "-o", "jsonpath={.spec.hard.memory}"]).out == "1G")

        // Upstream's refusals, each naming its field.
        let high = try server.kubectl(["create", "priorityclass", "top", "--value=2000000000"])
        #expect(high.code == 1 && high.out.contains("value: Forbidden: maximum allowed value of a user defined priority is 1000000000"), "\(high.out)")
        let both = try server.kubectl(["apply", "-f", "-"], stdin: """
            apiVersion: policy/v1
            kind: PodDisruptionBudget
            metadata: {name: both}
            spec: {minAvailable: 1, maxUnavailable: "10%", selector: {matchLabels: {app: web}}}
            """)
        #expect(both.code == 1 && both.out.contains("minAvailable and maxUnavailable cannot be both set"), "\(both.out)")
        let policy = try server.kubectl(["apply", "-f", "-"], stdin: """
            apiVersion: networking.k8s.io/v1
            kind: NetworkPolicy
            metadata: {name: db}
            spec:
              podSelector: {matchLabels: {app: db}}
              ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}], ports: [{port: 5432, endPort: 5000}]}]
            """)
        #expect(policy.code == 1 && policy.out.contains("spec.ingress[0].from[0].ipBlock.cidr: Invalid value: \"10.0.0.0/33\"")
            && policy.out.contains("spec.ingress[0].ports[0].endPort: Invalid value: 5000"), "\(policy.out)")
        // A valid one is stored with upstream's defaults.
        #expect(try server.kubectl(["apply", "-f", "-"], stdin: """
            apiVersion: networking.k8s.io/v1
            kind: NetworkPolicy
            metadata: {name: db}
            spec:
              podSelector: {matchLabels: {app: db}}
              ingress: [{ports: [{port: 5432}]}]
            """).out == "networkpolicy.networking.k8s.io/db created\n")
        #expect(try server.kubectl(["get", "netpol", "db", "-o", "jsonpath={.spec.policyTypes}/{.spec.ingress[0].ports[0].protocol}"]).out == #"["Ingress"]/TCP"#)
    }
}
