import AsyncHTTPClient
import Foundation
import KemuAPI
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// A Kubernetes API client for one server: CRUD on any resource in `APIResources`, and watch as a
/// stream of events. Errors from the server arrive as `ClientError` carrying its Status.
public struct APIClient: Sendable {
    /// `https://127.0.0.1:6443`, no trailing slash.
    public let server: String
    let bearerToken: String?
    /// Trust roots and client certificate for https; nil for plain http.
    public let tls: TLSConfiguration?
    let http: HTTPClient

    /// The HTTP client kemu's API clients share. A connect that fails fails its request at once and
    /// the caller retries on its own schedule (an agent's heartbeat every second): AsyncHTTPClient's
    /// shared client retries a refused connect until the request's deadline, which kept node
    /// agents silent for up to 30 s after the API server came back.
    public static let sharedHTTP: HTTPClient = {
        var configuration = HTTPClient.Configuration.singletonConfiguration
        // Refused at once when the server is down (loopback); the timeout bounds a TLS handshake
        // with a server short of CPU, which 2 s cut off under a burst of pod starts.
        configuration.timeout.connect = .seconds(5)
        configuration.connectionPool.retryConnectionEstablishment = false
        // A node agent starting a burst of pods writes many statuses, events and token requests at
        // once beside its long-running watches: the default 8 connections per host made requests
        // wait for a connection past the connect timeout (getConnectionFromPoolTimeout).
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 16
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    /// Runs `body` with a copy of this client that has a connection of its own: its own event-loop
    /// thread and pool, kept alive by use. A node agent's heartbeats go this way, as kubelet's have
    /// a client of their own: under a storm of pod starts the shared pool's connections are busy
    /// and a new one waits for a TLS handshake with a server short of CPU — the heartbeat came
    /// late and a healthy node was marked NotReady.
    /// `nice`, when given, is its event-loop thread's niceness (root only; skipped without).
    public func withOwnConnection<T: Sendable>(nice: Int32? = nil, _ body: (APIClient) async throws -> T) async throws -> T {
        var configuration = HTTPClient.Configuration()
        configuration.timeout.connect = .seconds(5)
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 2
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        if let nice {
            try? await group.next().submit { _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, nice) }.get()
        }
        let http = HTTPClient(eventLoopGroupProvider: .shared(group), configuration: configuration)
        let own = APIClient(server: server, bearerToken: bearerToken, tls: tls, http: http)
        let result: Result<T, any Error>
        do { result = .success(try await body(own)) } catch { result = .failure(error) }
        try? await http.shutdown()
        try? await group.shutdownGracefully()
        return try result.get()
    }

    public init(server: String, bearerToken: String? = nil, tls: TLSConfiguration? = nil, http: HTTPClient = APIClient.sharedHTTP) {
        self.server = server.hasSuffix("/") ? String(server.dropLast()) : server
        self.bearerToken = bearerToken
        self.tls = tls
        self.http = http
    }

    /// A client for the kubeconfig's current context: its CA as the only trust root, its client
    /// certificate if it has one, else its bearer token.
    public init(kubeconfig: Kubeconfig, http: HTTPClient = APIClient.sharedHTTP) throws {
        var tls: TLSConfiguration?
        if kubeconfig.server.hasPrefix("https://") {
            var configuration = TLSConfiguration.makeClientConfiguration()
            do {
                if let ca = kubeconfig.certificateAuthorityPEM {
                    configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(ca.utf8)))
                }
                if let certificate = kubeconfig.clientCertificatePEM, let key = kubeconfig.clientKeyPEM {
                    configuration.certificateChain = try NIOSSLCertificate.fromPEMBytes(Array(certificate.utf8)).map { .certificate($0) }
                    configuration.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: Array(key.utf8), format: .pem))
                }
            } catch {
                throw ClientError.kubeconfig(kubeconfig.cluster, "has a certificate or key that does not load: \(error)")
            }
            tls = configuration
        }
        self.init(server: kubeconfig.server, bearerToken: kubeconfig.token, tls: tls, http: http)
    }

    /// The path of a resource's collection, or of one object when `name` is given.
    public static func path(_ r: APIResource, namespace: String? = nil, name: String? = nil, subresource: String? = nil) -> String {
        var path = r.group.isEmpty ? "/api/\(r.version)" : "/apis/\(r.group)/\(r.version)"
        if r.namespaced, let namespace { path += "/namespaces/\(namespace)" }
        path += "/\(r.resource)"
        if let name { path += "/\(name)" }
        if let subresource { path += "/\(subresource)" }
        return path
    }

    public func get(_ r: APIResource, namespace: String? = nil, name: String) async throws -> JSON {
        try await send(.GET, Self.path(r, namespace: namespace, name: name))
    }

    /// Objects and the revision of the list, to watch from.
    public func list(_ r: APIResource, namespace: String? = nil, labels: String? = nil, fields: String? = nil) async throws
        -> (items: [JSON], resourceVersion: String) {
        let list = try await send(.GET, Self.path(r, namespace: namespace) + Self.query(["labelSelector": labels, "fieldSelector": fields]))
        return (list["items"]?.array ?? [], list[path: "metadata.resourceVersion"]?.string ?? "")
    }

    /// The list in pages of `limit` (client-go's pager: 500), each handed to `page` as it
    /// comes, so a caller that keeps a compact form never holds the whole list's JSON. Returns
    /// the revision to watch from (the first page's).
    public func list(_ r: APIResource, namespace: String? = nil, labels: String? = nil, fields: String? = nil, limit: Int,
                     page: ([JSON]) async throws -> Void) async throws -> String {
        var token: String?
        var revision: String?
        repeat {
            let query = Self.query(["labelSelector": labels, "fieldSelector": fields, "limit": String(limit), "continue": token])
            let list = try await send(.GET, Self.path(r, namespace: namespace) + query)
            if revision == nil { revision = list[path: "metadata.resourceVersion"]?.string ?? "" }
            try await page(list["items"]?.array ?? [])
            token = list[path: "metadata.continue"]?.string.flatMap { $0.isEmpty ? nil : $0 }
        } while token != nil
        return revision ?? ""
    }

    @discardableResult
    public func create(_ r: APIResource, _ object: JSON) async throws -> JSON {
        try await send(.POST, Self.path(r, namespace: object.namespace.isEmpty ? nil : object.namespace), body: object)
    }

    /// POST to an object's subresource (`serviceaccounts/NAME/token`, `pods/NAME/eviction`): the answer.
    public func create(_ r: APIResource, namespace: String?, name: String, subresource: String, _ body: JSON) async throws -> JSON {
        try await send(.POST, Self.path(r, namespace: namespace, name: name, subresource: subresource), body: body)
    }

    /// PUT: fails with 409 when the object's resourceVersion is stale.
    public func update(_ r: APIResource, _ object: JSON, subresource: String? = nil) async throws -> JSON {
        try await send(.PUT, Self.path(r, namespace: object.namespace.isEmpty ? nil : object.namespace, name: object.name,
                                       subresource: subresource), body: object)
    }

    /// A JSON merge patch (RFC 7386).
    public func patch(_ r: APIResource, namespace: String? = nil, name: String, _ patch: JSON, subresource: String? = nil) async throws -> JSON {
        try await send(.PATCH, Self.path(r, namespace: namespace, name: name, subresource: subresource), body: patch,
                       contentType: "application/merge-patch+json")
    }

    /// DELETE with the options given: a propagation policy, a grace period (pods; 0 is final),
    /// a uid precondition (never delete a newer object of the same name).
    @discardableResult
    public func delete(_ r: APIResource, namespace: String? = nil, name: String, propagation: String? = nil,
                       gracePeriodSeconds: Int? = nil, uid: String? = nil) async throws -> JSON {
        var options: JSON = ["kind": "DeleteOptions", "apiVersion": "v1"]
        if let propagation { options["propagationPolicy"] = .string(propagation) }
        if let gracePeriodSeconds { options["gracePeriodSeconds"] = .int(Int64(gracePeriodSeconds)) }
        if let uid { options["preconditions"] = ["uid": .string(uid)] }
        return try await send(.DELETE, Self.path(r, namespace: namespace, name: name), body: options)
    }

    /// Events after `resourceVersion`, one per line of the server's chunked response, until the
    /// server ends the watch (`timeoutSeconds`) or the task is cancelled. A watch too far behind
    /// ends with `ClientError` code 410: list again, then watch from the new revision.
    public func watch(_ r: APIResource, namespace: String? = nil, labels: String? = nil, fields: String? = nil, from resourceVersion: String,
                      timeoutSeconds: Int = 300) -> AsyncThrowingStream<WatchEvent, any Error> {
        let url = server + Self.path(r, namespace: namespace) + Self.query([
            "watch": "true", "resourceVersion": resourceVersion, "labelSelector": labels, "fieldSelector": fields,
            "timeoutSeconds": String(timeoutSeconds), "allowWatchBookmarks": "false",
        ])
        let request = self.request(.GET, url)
        let http = self.http
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    let response = try await http.execute(request, timeout: .seconds(Int64(timeoutSeconds) + 30))
                    guard response.status == .ok else {
                        let body = try await response.body.collect(upTo: 1 << 20)
                        throw ClientError(status: Int(response.status.code), body: Array(body.readableBytesView))
                    }
                    var pending: [UInt8] = []
                    for try await chunk in response.body {
                        pending.append(contentsOf: chunk.readableBytesView)
                        // Every complete line, then the consumed bytes dropped once per chunk.
                        var start = pending.startIndex
                        while let newline = pending[start...].firstIndex(of: UInt8(ascii: "\n")) {
                            if newline > start, let event = try WatchEvent.decode(try JSON.parse(pending[start..<newline])) { continuation.yield(event) }
                            start = newline + 1
                        }
                        pending.removeSubrange(..<start)
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    static func query(_ parameters: KeyValuePairs<String, String?>) -> String {
        var allowed = CharacterSet.urlQueryAllowed
        allowed.remove(charactersIn: "&=+,")
        let parts = parameters.compactMap { key, value in
            value.map { "\(key)=\($0.addingPercentEncoding(withAllowedCharacters: allowed) ?? $0)" }
        }
        return parts.isEmpty ? "" : "?" + parts.joined(separator: "&")
    }

    func request(_ method: HTTPMethod, _ url: String, body: JSON? = nil, contentType: String = "application/json") -> HTTPClientRequest {
        var request = HTTPClientRequest(url: url)
        request.method = method
        request.tlsConfiguration = tls
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "User-Agent", value: "kemu-client")
        if let bearerToken { request.headers.add(name: "Authorization", value: "Bearer \(bearerToken)") }
        if let body {
            request.headers.add(name: "Content-Type", value: contentType)
            request.body = .bytes(ByteBuffer(bytes: body.bytes()))
        }
        return request
    }

    func send(_ method: HTTPMethod, _ path: String, body: JSON? = nil, contentType: String = "application/json") async throws -> JSON {
        let response = try await http.execute(request(method, server + path, body: body, contentType: contentType), timeout: .seconds(30))
        let bytes = Array(try await response.body.collect(upTo: 64 << 20).readableBytesView)
        guard (200..<300).contains(response.status.code) else { throw ClientError(status: Int(response.status.code), body: bytes) }
        return try JSON.parse(bytes)
    }
}

extension WatchEvent {
    /// A watch line as the server sends it; nil for an event type this client does not know
    /// (skipped, as client-go does). The server reports a watch that cannot go on (410 Expired)
    /// as an ERROR event: thrown as the ClientError it carries.
    static func decode(_ event: JSON) throws -> WatchEvent? {
        guard let type = event["type"]?.string, let object = event["object"] else {
            throw ClientError(code: 0, reason: "BadWatchEvent", message: "a watch line without type and object")
        }
        if type == "ERROR" { throw ClientError(object) }
        return Kind(rawValue: type).map { WatchEvent($0, object) }
    }
}

/// KemuClient's one error: a request the server refused, with its metav1.Status; or (code 0) a
/// failure on this side: a kubeconfig that cannot be used, a watch line that makes no sense.
public struct ClientError: Error, CustomStringConvertible {
    /// HTTP status: 404 NotFound, 409 Conflict, 410 Expired, 422 Invalid…; 0 for a local failure.
    public var code: Int
    public var reason: String
    public var message: String

    public init(code: Int, reason: String, message: String) {
        self.code = code
        self.reason = reason
        self.message = message
    }

    init(_ status: JSON) {
        self.init(code: Int(status["code"]?.int ?? 0), reason: status["reason"]?.string ?? "", message: status["message"]?.string ?? "")
    }

    init(status: Int, body: [UInt8]) {
        if let s = try? JSON.parse(body), s["kind"]?.string == "Status" {
            self.init(s)
            code = status
        } else {
            self.init(code: status, reason: "", message: String(decoding: body.prefix(512), as: UTF8.self))
        }
    }

    /// A kubeconfig (by its path) that cannot be read or used.
    static func kubeconfig(_ path: String, _ problem: String) -> ClientError {
        ClientError(code: 0, reason: "Kubeconfig", message: "kubeconfig \(path) \(problem)")
    }

    public var description: String { code == 0 ? message : "\(code) \(reason): \(message)" }
}
