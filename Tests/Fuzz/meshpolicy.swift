// libFuzzer target: Istio's AuthorizationPolicy and PeerAuthentication as users write them, and
// the decision on a connection, over any JSON body: nothing traps, and a policy that parses
// decides every request one way or the other. Gateway API routes, Linkerd's failure accrual
// annotations and the lab's marks on Nodes (revoked serials, clock skew) — the mesh's other user
// input — go through the same bodies.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMeshPolicy(_ data: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = Array(UnsafeRawBufferPointer(start: data, count: count))
    guard let object = try? JSON.parse(bytes) else { return 0 }
    _ = try? PeerAuthentication.parse(object).get()
    _ = TrafficRoute.summary(object)
    _ = FailureAccrual.parse(object.annotations)
    _ = Mesh.revokedSerials(object.annotations[Mesh.revokedAnnotation] ?? "")
    if let skew = object.annotations[Mesh.clockSkewAnnotation].flatMap(Mesh.clockSkew) {
        precondition(abs(skew) <= Mesh.maximumSkewSeconds, "a skew past its bound")
    }
    if let text = object["duration"]?.string { _ = FailureAccrual.goDurationSeconds(text) }
    guard let policy = try? AuthorizationPolicy.parse(object).get() else { return 0 }
    let seed = bytes.reduce(UInt32(2166136261)) { ($0 ^ UInt32($1)) &* 16777619 }
    let request = AuthorizationPolicy.Request(principal: seed & 1 == 0 ? nil : "cluster.local/ns/a/sa/b", sourceNamespace: "a",
                                              sourceIP: seed, port: UInt16(truncatingIfNeeded: seed >> 8))
    _ = AuthorizationPolicy.evaluate([policy], namespace: policy.namespace, labels: policy.selector ?? [:], request)
    return 0
}
