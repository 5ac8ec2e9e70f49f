import Foundation
import HTTPTypes
import Hummingbird
import KemuAPI
import KemuPKI
import KemuStore
import Logging
import NIOCore

/// The Kubernetes API over a `Store`: one responder that reads Kubernetes paths itself, so every
/// resource in `APIResources` is served the same way.
public struct APIServer: HTTPResponder {
    public typealias Context = APIRequestContext

    public let store: Store
    /// Bodies larger than this are refused with 413 (upstream's limit is 3 MiB for most objects).
    public var maxBodyBytes = 3 << 20
    let logger = Logger(label: "kemu.apiserver")
    /// Open watch streams, ended when the server stops.
    let watches = WatchRegistry()

    let services: ServiceAllocator
    /// Node authorizer and RBAC over the stored roles; asked whenever `authenticator` is set.
    public let authorizer: Authorizer
    /// nil serves everyone (plain http on loopback, `--insecure`); otherwise anonymous requests
    /// get 401 except the health endpoints.
    public var authenticator: Authenticator?
    /// Issues ServiceAccount tokens (TokenRequest); nil without authentication.
    public var serviceAccountTokens: ServiceAccountTokens?
    /// Seats for requests in flight, a lane for the cluster's components (nil: no limits).
    public var lanes: PriorityLanes? = PriorityLanes()
    /// Where writes, execs and refusals are recorded (`kemu server` keeps DATA-DIR/audit.log).
    public var audit: AuditLog?
    /// Where node agents write container logs (`kemu up` passes its cluster's), for pods/log.
    public var podLogDirectory: String?
    /// CPU samples of container processes, for metrics.k8s.io rates.
    let usage = UsageSampler()

    public init(store: Store, ranges: ServiceRanges = ServiceRanges()) throws {
        self.store = store
        let services = ServiceAllocator(ranges, existing: store.list("services").items)
        self.services = services
        authorizer = Authorizer(store: store)
        // Whoever deletes a Service (a client, the namespace purge, the garbage collector), its
        // addresses and ports are free again in the same step.
        store.onDelete("services") { services.release($0) }
        try bootstrap()
    }

    /// The namespaces every cluster has.
    func bootstrap() throws {
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] where store.get("namespaces", name: name) == nil {
            var ns: JSON = ["apiVersion": "v1", "kind": "Namespace"]
            ns.name = name
            ns["spec"] = ["finalizers": ["kubernetes"]]
            ns["status"] = ["phase": "Active"]
            try store.create("namespaces", ns)
        }
        // The `kubernetes` Service: the first address of the service range, port 443 → 6443.
        if store.get("services", namespace: "default", name: "kubernetes") == nil {
            var svc: JSON = ["apiVersion": "v1", "kind": "Service"]
            svc.name = "kubernetes"
            svc.namespace = "default"
            svc.labels = ["component": "apiserver", "provider": "kubernetes"]
            svc["spec"] = ["type": "ClusterIP", "sessionAffinity": "None",
                           "clusterIP": .string(services.ranges.serviceCIDR.host(1)!.description),
                           "ports": [["name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443]]]
            let errors = services.allocate(&svc)
            if !errors.isEmpty { throw APIError(code: 500, reason: "InternalError", message: "cannot allocate the kubernetes Service: \(errors)") }
            try store.create("services", svc)
        }
        // The two system PriorityClasses (above what a user's class may have, so made here).
        for (name, value, description) in [
            ("system-node-critical", 2_000_001_000, "Used for system critical pods that must not be moved from their current node."),
            ("system-cluster-critical", 2_000_000_000, "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."),
        ] where store.get("priorityclasses.scheduling.k8s.io", name: name) == nil {
            var pc: JSON = ["apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "value": .int(Int64(value)),
                            "description": .string(description), "preemptionPolicy": "PreemptLowerPriority"]
            pc.name = name
            try store.create("priorityclasses.scheduling.k8s.io", pc)
        }
        try BootstrapPolicy.reconcile(store)
    }

    /// Points the `kubernetes` Service at this server: its targetPort, its Endpoints and its
    /// EndpointSlice (upstream's endpoint reconciler does the same for each API server).
    public func publishEndpoints(address: String, port: Int) throws {
        let ports: JSON = [["name": "https", "port": .int(Int64(port)), "protocol": "TCP"]]
        _ = try store.modify("services", namespace: "default", name: "kubernetes") { svc in
            svc["spec", default: [:]]["ports"] = [["name": "https", "port": 443, "protocol": "TCP", "targetPort": .int(Int64(port))]]
        }
        var endpoints: JSON = ["apiVersion": "v1", "kind": "Endpoints",
                               "subsets": [["addresses": [["ip": .string(address)]], "ports": ports]]]
        endpoints.name = "kubernetes"
        endpoints.namespace = "default"
        endpoints.labels = ["endpointslice.kubernetes.io/skip-mirror": "true"]
        var slice: JSON = ["apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4", "ports": ports,
                           "endpoints": [["addresses": [.string(address)], "conditions": ["ready": true]]]]
        slice.name = "kubernetes"
        slice.namespace = "default"
        slice.labels = ["kubernetes.io/service-name": "kubernetes"]
        for (resource, desired) in [("endpoints", endpoints), ("endpointslices.discovery.k8s.io", slice)] {
            if store.get(resource, namespace: "default", name: "kubernetes") == nil {
                _ = try store.create(resource, desired)
            } else {
                _ = try store.modify(resource, namespace: "default", name: "kubernetes") { o in
                    for key in ["subsets", "addressType", "ports", "endpoints"] { o[key] = desired[key] }
                    o.labels = desired.labels
                }
            }
        }
    }

    public func respond(to request: Request, context: Context) async throws -> Response {
        let received = Date()
        let query = Query(request.uri.query)
        let path = APIPath(request.uri.path)
        let attributes = Self.attributes(path, rawPath: request.uri.path, method: request.method, watch: query.flag("watch"))
        var caller: Identity?, user: Identity?, decision: String?
        let response: Response
        do {
            if let authenticator, path?.isHealth != true {
                guard let identified = await authenticator.identify(request, channel: context.channel) else { throw APIError.unauthorized }
                caller = identified
                let acting = try impersonated(identified, request.headers)
                decision = try authorize(acting, attributes)
                user = acting
            }
            guard let path else { throw APIError.notFound("the server could not find the requested resource") }
            if let lanes, !Self.longRunning(attributes, query) {
                let lane = PriorityLanes.lane(of: user, attributes)
                let flow = user?.user ?? context.channel.remoteAddress?.ipAddress ?? "anonymous"
                response = try await lanes.withSeat(lane, flow: flow) {
                    try await route(path, request, query, user: user, channel: context.channel)
                }
            } else {
                response = try await route(path, request, query, user: user, channel: context.channel)
            }
        } catch let error as any StatusConvertible {
            response = Self.status(error.apiError(about: nil))
        } catch {
            logger.error("\(request.method) \(request.uri): \(error)")
            response = Self.status(APIError(code: 500, reason: "InternalError", message: "\(error)"))
        }
        let code = Int(response.status.code)
        if let audit, AuditLog.wanted(attributes, code: code) {
            audit.record(.init(attributes: attributes, user: user ?? caller,
                               impersonatedBy: user != nil && user != caller ? caller : nil,
                               uri: request.uri.description, sourceIP: context.channel.remoteAddress?.ipAddress,
                               userAgent: request.headers[.userAgent], code: code, received: received, decision: decision))
        }
        return response
    }

    func route(_ path: APIPath, _ request: Request, _ query: Query, user: Identity?, channel: (any Channel)? = nil) async throws -> Response {
        switch path {
        case .version: return Self.json(Discovery.version)
        case .healthz: return Response(status: .ok, headers: [.contentType: "text/plain; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: "ok")))
        case .coreRoot, .groupsRoot:
            let core = path == .coreRoot
            if Discovery.wantsAggregated(request.headers[.accept]) {
                return Self.json(Discovery.aggregated(core: core), contentType: Discovery.aggregatedContentType)
            }
            return Self.json(core ? Discovery.legacyCore(host: request.head.authority ?? "127.0.0.1") : Discovery.legacyGroups)
        case .groupVersion(let group, let version): return Self.json(Discovery.resourceList(group: group, version: version))
        case .openAPIRoot: return Self.json(OpenAPI.root)
        case .openAPI(let group, let version): return Self.json(OpenAPI.document(group: group, version: version))
        case .object(let resource, let namespace, let name, let subresource):
            let target = Target(resource: resource, namespace: namespace, name: name, subresource: subresource, user: user, channel: channel)
            return try await serve(target, request, query)
        }
    }

    // MARK: responses

    static func json(_ body: JSON, status: HTTPResponse.Status = .ok, contentType: String = "application/json") -> Response {
        Response(status: status, headers: [.contentType: contentType], body: .init(byteBuffer: ByteBuffer(bytes: body.bytes())))
    }

    static func status(_ error: APIError) -> Response {
        var response = json(error.status, status: HTTPResponse.Status(code: error.code))
        // client-go waits and retries a 429 that says when; an eviction a budget refuses says
        // nothing, as upstream's, so `kubectl drain` reports it and retries on its own.
        if error.code == 429, error.causes.isEmpty { response.headers[.retryAfter] = "1" }
        return response
    }

    /// Requests that hold no seat: watches, followed logs, exec/attach/port-forward (upstream's
    /// long-running requests), which would otherwise pin seats for as long as they last.
    static func longRunning(_ a: RequestAttributes, _ query: Query) -> Bool {
        a.verb == "watch" || ["exec", "attach", "portforward"].contains(a.subresource) || (a.subresource == "log" && query.flag("follow"))
    }

    /// The request body as JSON: 413 past the limit, 400 for anything that does not parse.
    func body(_ request: Request) async throws -> JSON {
        let type = request.headers[.contentType] ?? ""
        if type.contains("cbor") {
            throw APIError.unsupportedMediaType("the body of the request was in an unknown format - accepted media types include: application/json")
        }
        var request = request
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: maxBodyBytes)
        } catch {
            throw APIError.tooLarge("the request body is larger than \(maxBodyBytes) bytes")
        }
        if type.contains("protobuf") { return try Protobuf.decode(Array(buffer.readableBytesView)) }
        return try JSON.parse(buffer.readableBytesView)  // InputError: a 400 naming the byte
    }
}

/// The object or collection a request is about.
struct Target {
    var resource: APIResource
    var namespace: String?
    var name: String?
    var subresource: String?
    /// Who asks (nil when the server authenticates nobody: plain http, `--insecure`).
    var user: Identity? = nil
    /// The client's connection, for a watch to cut off a client that stopped reading.
    var channel: (any Channel)? = nil
    /// What the client addressed, when the objects are stored as another resource
    /// (events.k8s.io/v1 Events are core Events; a kind served in several versions is stored in
    /// its preferred one): bodies converted in, objects converted out.
    var presented: APIResource? = nil

    /// Stored objects as the client's resource shows them.
    func outward(_ o: JSON) -> JSON {
        guard let presented, o["kind"]?.string == resource.kind else { return o }
        guard presented.group == "events.k8s.io" else { return Self.relabelled(o, presented) }
        return EventsV1.outward(o)
    }

    /// A body in the client's resource as it is stored.
    func inward(_ o: JSON) -> JSON {
        guard let presented else { return o }
        guard presented.group == "events.k8s.io" else { return o["apiVersion"] == nil ? o : Self.relabelled(o, resource) }
        return EventsV1.inward(o)
    }

    /// Versions whose schemas are the same (HTTPRoute v1beta1 and v1) differ in apiVersion only.
    static func relabelled(_ o: JSON, _ r: APIResource) -> JSON {
        var o = o
        o["apiVersion"] = .string(r.groupVersion)
        return o
    }

    /// events.k8s.io/v1 requests served from the core Events; other versions from the preferred.
    func stored() -> Target {
        let storage = resource.group == "events.k8s.io" ? APIResources.events : APIResources.storage(of: resource)
        guard storage != resource else { return self }
        var t = self
        t.presented = resource
        t.resource = storage
        return t
    }
}
