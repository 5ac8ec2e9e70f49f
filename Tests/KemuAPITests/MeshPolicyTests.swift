import KemuAPI
import Testing

/// Istio's AuthorizationPolicy and PeerAuthentication semantics at layer 4, as ztunnel applies them.
@Suite struct MeshPolicyTests {
    func policy(_ yaml: JSON) -> AuthorizationPolicy? { try? AuthorizationPolicy.parse(yaml).get() }

    func object(namespace: String = "shop", name: String, spec: JSON) -> JSON {
        var o: JSON = ["apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "spec": spec]
        o.namespace = namespace
        o.name = name
        return o
    }

    let web = ["app": "web"]
    func from(_ principal: String?, namespace: String? = nil, ip: UInt32? = 0x0af4_0102, port: UInt16 = 8080) -> AuthorizationPolicy.Request {
        AuthorizationPolicy.Request(principal: principal, sourceNamespace: namespace, sourceIP: ip, port: port)
    }

    @Test func noPolicyAllowsDenyComesFirstAndAnAllowIsNeededOnceThereIsOne() throws {
        let deny = try #require(policy(object(name: "deny", spec: ["action": "DENY", "rules": [["from": [["source": ["principals": ["cluster.local/ns/shop/sa/bad"]]]]]]])))
        let allow = try #require(policy(object(name: "allow", spec: ["selector": ["matchLabels": ["app": "web"]],
                                                                     "rules": [["from": [["source": ["namespaces": ["shop"]]]]]]])))
        let bad = from("cluster.local/ns/shop/sa/bad", namespace: "shop"), good = from("cluster.local/ns/shop/sa/web", namespace: "shop")
        #expect(AuthorizationPolicy.evaluate([], namespace: "shop", labels: web, bad).allowed)
        #expect(!AuthorizationPolicy.evaluate([deny], namespace: "shop", labels: web, bad).allowed)
        #expect(AuthorizationPolicy.evaluate([deny], namespace: "shop", labels: web, good).allowed)
        // An ALLOW selecting the workload: only what it allows gets in; DENY still wins.
        #expect(AuthorizationPolicy.evaluate([allow, deny], namespace: "shop", labels: web, good).allowed)
        let denied = AuthorizationPolicy.evaluate([allow, deny], namespace: "shop", labels: web, bad)
        #expect(!denied.allowed && denied.policy?.name == "deny")
        #expect(!AuthorizationPolicy.evaluate([allow], namespace: "shop", labels: web, from("cluster.local/ns/other/sa/x", namespace: "other")).allowed)
        // Plaintext has no principal or namespace: an ALLOW by namespace does not let it in.
        #expect(!AuthorizationPolicy.evaluate([allow], namespace: "shop", labels: web, from(nil)).allowed)
        // Another workload is not selected by the ALLOW: allowed.
        #expect(AuthorizationPolicy.evaluate([allow], namespace: "shop", labels: ["app": "db"], from(nil)).allowed)
        // A policy of another namespace does not apply; the root namespace's applies everywhere.
        var elsewhere = deny
        elsewhere.namespace = "other"
        #expect(AuthorizationPolicy.evaluate([elsewhere], namespace: "shop", labels: web, bad).allowed)
        elsewhere.namespace = AuthorizationPolicy.rootNamespace
        #expect(!AuthorizationPolicy.evaluate([elsewhere], namespace: "shop", labels: web, bad).allowed)
    }

    @Test func emptyAllowDeniesAllAndWildcardsMatchAsIstiosDo() throws {
        let denyAll = try #require(policy(object(name: "deny-all", spec: [:])))
        #expect(denyAll.action == .allow && denyAll.rules.isEmpty)
        #expect(!AuthorizationPolicy.evaluate([denyAll], namespace: "shop", labels: web, from("cluster.local/ns/shop/sa/web")).allowed)
        let anyAuthenticated = try #require(policy(object(name: "mtls", spec: ["rules": [["from": [["source": ["principals": ["*"]]]]]]])))
        #expect(AuthorizationPolicy.evaluate([anyAuthenticated], namespace: "shop", labels: web, from("cluster.local/ns/a/sa/b")).allowed)
        #expect(!AuthorizationPolicy.evaluate([anyAuthenticated], namespace: "shop", labels: web, from(nil)).allowed)
        let prefix = try #require(policy(object(name: "p", spec: ["rules": [["from": [["source": ["principals": ["cluster.local/ns/shop/*"]]]]]]])))
        #expect(AuthorizationPolicy.evaluate([prefix], namespace: "shop", labels: web, from("cluster.local/ns/shop/sa/x")).allowed)
        #expect(!AuthorizationPolicy.evaluate([prefix], namespace: "shop", labels: web, from("cluster.local/ns/shopping/sa/x")).allowed)
    }

    @Test func portsIPBlocksAndLayer7Fields() throws {
        let ports = try #require(policy(object(name: "ports", spec: ["rules": [["to": [["operation": ["ports": ["8080"]]]]]]])))
        #expect(AuthorizationPolicy.evaluate([ports], namespace: "shop", labels: web, from(nil, port: 8080)).allowed)
        #expect(!AuthorizationPolicy.evaluate([ports], namespace: "shop", labels: web, from(nil, port: 9090)).allowed)
        let blocks = try #require(policy(object(name: "ip", spec: ["rules": [["from": [["source": ["ipBlocks": ["10.244.1.0/24"], "notIpBlocks": ["10.244.1.9"]]]]]]])))
        #expect(AuthorizationPolicy.evaluate([blocks], namespace: "shop", labels: web, from(nil, ip: 0x0af4_0102)).allowed)
        #expect(!AuthorizationPolicy.evaluate([blocks], namespace: "shop", labels: web, from(nil, ip: 0x0af4_0109)).allowed)
        #expect(!AuthorizationPolicy.evaluate([blocks], namespace: "shop", labels: web, from(nil, ip: 0x0af4_0202)).allowed)
        // An L7 rule: never matches in an ALLOW, matches regardless in a DENY.
        let l7: JSON = ["rules": [["to": [["operation": ["methods": ["GET"]]]]]]]
        let allowL7 = try #require(policy(object(name: "l7", spec: l7)))
        #expect(!AuthorizationPolicy.evaluate([allowL7], namespace: "shop", labels: web, from("cluster.local/ns/a/sa/b")).allowed)
        var denyL7Spec = l7
        denyL7Spec["action"] = "DENY"
        let denyL7 = try #require(policy(object(name: "l7d", spec: denyL7Spec)))
        #expect(!AuthorizationPolicy.evaluate([denyL7], namespace: "shop", labels: web, from("cluster.local/ns/a/sa/b")).allowed)
    }

    @Test func badPoliciesAreRefusedNamingTheField() {
        let bad: [(JSON, String)] = [
            (["action": "AUDIT"], "spec.action"),
            (["rules": [["from": [["source": ["ipBlocks": ["10.0.0.0/40"]]]]]]], "spec.rules[0].from[0].source.ipBlocks"),
            (["rules": [["to": [["operation": ["ports": ["http"]]]]]]], "spec.rules[0].to[0].operation.ports"),
            (["rules": [["from": [["source": ["principals": "x"]]]]]], "spec.rules[0].from[0].source.principals"),
            (["targetRefs": [["kind": "Service", "name": "web"]]], "spec.targetRefs"),
        ]
        for (spec, field) in bad {
            guard case let .failure(problems) = AuthorizationPolicy.parse(object(name: "x", spec: spec)) else {
                Issue.record("accepted \(spec)")
                continue
            }
            #expect(problems.items.map(\.field).contains(field), "\(problems.items)")
        }
    }

    @Test func theNarrowestPeerAuthenticationDecides() throws {
        func pa(_ namespace: String, _ mode: String, selector: [String: String]? = nil) throws -> PeerAuthentication {
            var spec: JSON = ["mtls": ["mode": .string(mode)]]
            if let selector { spec["selector"] = ["matchLabels": JSON.stringMapJSON(selector)] }
            var o: JSON = ["kind": "PeerAuthentication", "spec": spec]
            o.namespace = namespace
            o.name = "p-\(namespace)-\(mode)"
            return try PeerAuthentication.parse(o).get()
        }
        #expect(!PeerAuthentication.strict([], namespace: "shop", labels: web))
        #expect(PeerAuthentication.strict([try pa("istio-system", "STRICT")], namespace: "shop", labels: web))
        #expect(!PeerAuthentication.strict([try pa("istio-system", "STRICT"), try pa("shop", "PERMISSIVE")], namespace: "shop", labels: web))
        #expect(PeerAuthentication.strict([try pa("shop", "PERMISSIVE"), try pa("shop", "STRICT", selector: web)], namespace: "shop", labels: web))
        #expect(!PeerAuthentication.strict([try pa("shop", "STRICT", selector: web)], namespace: "shop", labels: ["app": "db"]))
        var bad: JSON = ["kind": "PeerAuthentication", "spec": ["mtls": ["mode": "SOMETIMES"]]]
        bad.name = "x"
        #expect((try? PeerAuthentication.parse(bad).get()) == nil)
    }
}
