import Foundation
import KemuAPI
import KemuClient
import KemuTestSupport
import Testing

/// Thousands of malformed requests of every class that reaches the API server from outside —
/// query parameters, selectors, continue tokens, headers, protobuf bodies, patch documents,
/// paths — against one https server: every answer is a Status below 500, the server stays up, and
/// its memory does not grow with what it was sent (issue 16, "a hostile-input test").
@Suite(.serialized) struct HostileClassesTests {
    /// xorshift64*: the same requests every run, so a failure can be replayed.
    struct Seeded: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state ^= state >> 12
            state ^= state << 25
            state ^= state >> 27
            return state &* 2_685_821_657_736_338_717
        }
    }

    static let odd = ["", "nan", "inf", "-inf", "-1", "0", "1e300", "9223372036854775807", "99999999999999999999", "0x10", "1.5",
                      "%00", "%ff%fe", "a=b", "(", "!!", "in (", "x notin ()", ",,,", String(repeating: "a", count: 5000),
                      String(repeating: "(", count: 2000), "app in (a,b", "=", "==", "!=", "metadata.name=", "spec.nodeName==x,",
                      "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6LTF9", "bm90LWEtdG9rZW4", "%7B%22rv%22%3A1e400%7D", "\u{7f}", "☃"]

    func encode(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
    }

    func rssKiB(_ pid: Int32) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        return status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }?.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
    }

    /// One malformed request of class `kind`.
    func request(_ kind: Int, _ g: inout Seeded) -> (method: String, path: String, body: [UInt8]?, type: String) {
        let pick = { (g: inout Seeded) in Self.odd.randomElement(using: &g)! }
        let randomBytes = { (g: inout Seeded, n: Int) in (0..<n).map { _ in UInt8.random(in: 0...255, using: &g) } }
        switch kind {
        case 0:  // list and watch parameters
            let key = ["limit", "continue", "resourceVersion", "timeoutSeconds", "labelSelector", "fieldSelector", "watch", "allowWatchBookmarks",
                       "resourceVersionMatch", "sendInitialEvents", "includeObject"].randomElement(using: &g)!
            let watch = Bool.random(using: &g) ? "&watch=1&timeoutSeconds=0" : ""
            return ("GET", "/api/v1/namespaces/default/pods?\(key)=\(encode(pick(&g)))\(watch)", nil, "")
        case 1:  // selectors on every kind of collection
            let resource = ["/api/v1/pods", "/api/v1/services", "/apis/apps/v1/deployments", "/api/v1/nodes", "/apis/discovery.k8s.io/v1/endpointslices"]
                .randomElement(using: &g)!
            return ("GET", "\(resource)?labelSelector=\(encode(pick(&g)))&fieldSelector=\(encode(pick(&g)))", nil, "")
        case 2:  // protobuf bodies: the magic, then anything
            var body: [UInt8] = Array("k8s".utf8) + [0]
            body += Bool.random(using: &g) ? randomBytes(&g, Int.random(in: 0...64, using: &g))
                : [0x0A, UInt8.random(in: 0...255, using: &g), 0x0A, 0x02, 0x76, 0x31, 0x12] + randomBytes(&g, 12) + [0x12] + Array(repeating: 0xFF, count: Int.random(in: 1...10, using: &g))
            let path = ["/api/v1/namespaces", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
                        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "/api/v1/namespaces/default/pods"].randomElement(using: &g)!
            return ("POST", path, body, "application/vnd.kubernetes.protobuf")
        case 3:  // JSON patches
            let op = ["add", "remove", "replace", "move", "copy", "test", "nope", ""].randomElement(using: &g)!
            let path = ["/metadata/labels/a", "/metadata/labels/~2", "/spec/containers/99999999999", "/spec/containers/-", "/spec/containers/-1",
                        "", "/", "//", "/metadata/name", "/status", "/a/b/c/d/e/f", "/spec/containers/0/ports/1e9"].randomElement(using: &g)!
            let value = ["1", "null", "\"x\"", "[1,2]", "{\"k\":{}}", String(repeating: "[", count: 300) + String(repeating: "]", count: 300)]
                .randomElement(using: &g)!
            let body = "[{\"op\":\"\(op)\",\"path\":\"\(path)\",\"from\":\"\(path)\",\"value\":\(value)}]"
            return ("PATCH", "/api/v1/namespaces/default/pods/target", Array(body.utf8), "application/json-patch+json")
        case 4:  // merge and strategic patches
            let body = ["null", "\"x\"", "[1,2]", "{\"metadata\":null}", "{\"spec\":{\"containers\":null}}", "{\"spec\":{\"$patch\":\"delete\"}}",
                        "{\"spec\":{\"containers\":[{\"$patch\":\"replace\"}]}}", "{\"metadata\":{\"labels\":{\"\(pick(&g))\":\"x\"}}}",
                        "{\"spec\":{\"$setElementOrder/containers\":[{\"name\":1}]}}", "{\"kind\":\"Service\"}", "{\"metadata\":{\"name\":\"other\"}}",
                        "{\"metadata\":{\"resourceVersion\":\"\(pick(&g))\"}}"].randomElement(using: &g)!
            let type = ["application/merge-patch+json", "application/strategic-merge-patch+json", "application/apply-patch+yaml", "text/plain"]
                .randomElement(using: &g)!
            return ("PATCH", "/api/v1/namespaces/default/pods/target", Array(body.utf8), type)
        case 5:  // paths
            let segment = ["..", ".", "%2e%2e", "%00", "a%2Fb", String(repeating: "n", count: 300), "default", "pods", "status", "exec", "x y", "☃"]
            let path = "/" + (0..<Int.random(in: 1...7, using: &g)).map { _ in segment.randomElement(using: &g)! }.joined(separator: "/")
            return (["GET", "DELETE", "PUT", "POST"].randomElement(using: &g)!, ["/api/v1", "/apis/apps/v1", ""].randomElement(using: &g)! + path,
                    Array("{}".utf8), "application/json")
        case 6:  // deletes with odd options and dry runs
            let body = "{\"propagationPolicy\":\"\(pick(&g))\",\"gracePeriodSeconds\":\(["-5", "1e400", "\"x\"", "null", "9223372036854775807"].randomElement(using: &g)!),"
                + "\"preconditions\":{\"uid\":\"\(pick(&g))\",\"resourceVersion\":\"\(pick(&g))\"},\"dryRun\":[\"\(pick(&g))\"]}"
            return ("DELETE", "/api/v1/namespaces/default/pods/target?dryRun=\(encode(pick(&g)))", Array(body.utf8), "application/json")
        default:  // JSON bodies that are valid JSON but odd objects
            let body = ["{\"metadata\":{\"name\":\"\(pick(&g))\"}}", "{\"metadata\":{\"name\":\"r\",\"labels\":{\"a\":\(pick(&g).count)}}}",
                        "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"r\"},\"spec\":{\"containers\":[{\"name\":\"c\",\"ports\":[{\"containerPort\":1e999}]}]}}",
                        "{\"metadata\":{\"name\":\"r\"},\"rules\":[{\"verbs\":[1],\"apiGroups\":{}}]}", "{\"spec\":{\"replicas\":-1e30}}",
                        "{\"metadata\":{\"generateName\":\"\(String(repeating: "g", count: 400))\"}}"].randomElement(using: &g)!
            let path = ["/api/v1/namespaces/default/pods", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
                        "/apis/apps/v1/namespaces/default/deployments", "/api/v1/namespaces", "/api/v1/namespaces/default/services"].randomElement(using: &g)!
            return ("POST", path, Array(body.utf8), "application/json")
        }
    }

    @Test func twoThousandMalformedRequestsGetStatusesAndCostNothing() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let client = try server.client()
        let pid = try #require(server.process?.processIdentifier)
        _ = try await client.create(APIResources.pods, pod("target"))
        var g = Seeded(state: 0x6b656d75_31360000)
        var codes: [Int: Int] = [:]
        var baseline = 0
        for i in 0..<2_400 {
            if i == 400 { baseline = rssKiB(pid) }  // after warm-up: pools, caches, TLS sessions
            let r = request(i % 8, &g)
            let (code, body) = try await send(client, r.method, r.path, body: r.body, contentType: r.type)
            codes[code, default: 0] += 1
            #expect(code < 500, "#\(i) \(r.method) \(r.path.prefix(200)) → \(code): \(body.prefix(300))")
            if code >= 400 { #expect(body.contains("\"kind\":\"Status\""), "#\(i) \(r.method) \(r.path.prefix(200)): \(body.prefix(200))") }
        }
        #expect(server.process?.isRunning == true)
        #expect(try await client.get(APIResources.namespaces, name: "default").name == "default")
        let after = rssKiB(pid)
        #expect(Double(after) <= Double(baseline) * 1.10, "RSS \(baseline) KiB after warm-up, \(after) KiB after 2,000 more")
        #expect(codes.keys.contains { $0 >= 400 } && codes.keys.contains { $0 < 300 }, "\(codes)")
    }
}
