import Foundation
import Hummingbird
import KemuAPI
import KemuPKI
import KemuStore

/// ServiceAccount tokens as upstream's TokenRequest API issues them and its authenticator takes
/// them: a signed JWT naming the account (and the pod it is bound to), valid until it expires
/// and only while the account — and the pod — it names still exist with the same uid, so a
/// deleted pod's token stops working at once.
public struct ServiceAccountTokens: Sendable {
    public let signer: TokenSigner
    /// `iss`, and the audience the API server itself accepts (upstream's default `--api-audiences`).
    public let issuer: String

    static let defaultSeconds: Int64 = 3600
    static let minimumSeconds: Int64 = 600
    static let maximumSeconds: Int64 = 1 << 32

    public init(signer: TokenSigner, clusterDomain: String = "cluster.local") {
        self.signer = signer
        issuer = "https://kubernetes.default.svc.\(clusterDomain)"
    }

    /// A token for `account`, bound to `pod` when one is given (with the node it runs on).
    func issue(account: JSON, audiences: [String], seconds: Int64, pod: JSON?, now: Date) throws -> (token: String, expires: Date) {
        let issued = Int64(now.timeIntervalSince1970)
        var scope: JSON = ["namespace": .string(account.namespace),
                           "serviceaccount": ["name": .string(account.name), "uid": .string(account.uid)]]
        if let pod {
            scope["pod"] = ["name": .string(pod.name), "uid": .string(pod.uid)]
            if let node = pod[path: "spec.nodeName"]?.string, !node.isEmpty { scope["node"] = ["name": .string(node)] }
        }
        let claims: JSON = ["iss": .string(issuer), "aud": .array(audiences.map { .string($0) }),
                            "sub": .string("system:serviceaccount:\(account.namespace):\(account.name)"),
                            "iat": .int(issued), "nbf": .int(issued), "exp": .int(issued + seconds),
                            "jti": .string(UUID().uuidString.lowercased()), "kubernetes.io": scope]
        return (try signer.sign(claims: claims.bytes()), Date(timeIntervalSince1970: TimeInterval(issued + seconds)))
    }

    /// Who the token stands for, if this server signed it for its own audience, it is within its
    /// lifetime, and what it names still exists; nil otherwise.
    func identity(_ token: String, store: Store, now: Date = Date()) -> Identity? {
        guard let bytes = signer.verify(token), let claims = try? JSON.parse(bytes) else { return nil }
        let seconds = Int64(now.timeIntervalSince1970)
        guard claims["iss"]?.string == issuer,
              (claims["aud"]?.array ?? []).contains(where: { $0.string == issuer }),
              let expires = claims["exp"]?.int, expires > seconds,
              (claims["nbf"]?.int ?? 0) <= seconds + 60,
              let namespace = claims["kubernetes.io"]?["namespace"]?.string,
              let name = claims["kubernetes.io"]?["serviceaccount"]?["name"]?.string,
              let uid = claims["kubernetes.io"]?["serviceaccount"]?["uid"]?.string,
              store.get("serviceaccounts", namespace: namespace, name: name)?.uid == uid else { return nil }
        if let pod = claims["kubernetes.io"]?["pod"] {
            guard let podName = pod["name"]?.string, let podUID = pod["uid"]?.string,
                  store.get("pods", namespace: namespace, name: podName)?.uid == podUID else { return nil }
        }
        return Identity(user: "system:serviceaccount:\(namespace):\(name)",
                        groups: ["system:serviceaccounts", "system:serviceaccounts:\(namespace)"])
    }

    /// The TokenRequest's spec with upstream's defaults, or 422 naming the field.
    static func checkedSpec(_ request: JSON, issuer: String) throws -> (audiences: [String], seconds: Int64) {
        let resource = APIResources.serviceAccounts
        let audiences = (request[path: "spec.audiences"]?.array ?? []).compactMap(\.string)
        var seconds = defaultSeconds
        if let given = request[path: "spec.expirationSeconds"] {
            guard let value = given.int else {
                throw APIError.invalid(resource, name: "", [.invalid("spec.expirationSeconds", given.text(), "must be an integer")])
            }
            guard value >= minimumSeconds else {
                throw APIError.invalid(resource, name: "", [.invalid("spec.expirationSeconds", "\(value)", "may not specify a duration less than 10 minutes")])
            }
            guard value <= maximumSeconds else {
                throw APIError.invalid(resource, name: "", [.invalid("spec.expirationSeconds", "\(value)", "may not specify a duration larger than 2^32 seconds")])
            }
            seconds = value
        }
        return (audiences.isEmpty ? [issuer] : audiences, seconds)
    }
}

extension APIServer {
    /// POST …/serviceaccounts/NAME/token (`kubectl create token NAME`): a TokenRequest answered
    /// with a token, never stored. `spec.boundObjectRef` binds it to a pod of that account.
    func requestToken(_ t: Target, _ name: String, _ request: Request) async throws -> Response {
        guard let tokens = serviceAccountTokens else {
            throw APIError.notFound("serviceaccounts/token: this server issues no tokens (it runs without authentication)")
        }
        let account = try get(t, name)
        var review = try await body(request)
        let (audiences, seconds) = try ServiceAccountTokens.checkedSpec(review, issuer: tokens.issuer)
        var pod: JSON?
        if let bound = review[path: "spec.boundObjectRef"], bound.object != nil {
            let resource = APIResources.serviceAccounts
            guard bound["kind"]?.string == "Pod" else {
                throw APIError.invalid(resource, name: name, [.invalid("spec.boundObjectRef.kind", bound["kind"]?.text() ?? "null",
                                                                       "kemu binds tokens to pods only (kind: Pod)")])
            }
            let podName = bound["name"]?.string ?? ""
            guard let found = store.get("pods", namespace: account.namespace, name: podName) else {
                throw APIError.notFound("pods \"\(podName)\" not found")
            }
            if let uid = bound["uid"]?.string, !uid.isEmpty, uid != found.uid {
                throw APIError(code: 409, reason: "Conflict", message: "the UID in the bound object reference (\(uid)) does not match the UID in record. The object might have been deleted and then recreated")
            }
            let podAccount = found[path: "spec.serviceAccountName"]?.string ?? "default"
            guard podAccount == account.name else {
                throw APIError(code: 400, reason: "BadRequest",
                               message: "cannot bind token for serviceaccount \"\(account.name)\" to pod running with different serviceaccount name.")
            }
            pod = found
        }
        if let node = t.user.flatMap(NodeAuthorizer.node(of:)) {
            // NodeRestriction: a node asks only for tokens bound to a pod that runs on it.
            guard let pod, pod[path: "spec.nodeName"]?.string == node else {
                throw NodeAuthorizer.refusal("node \"\(node)\" may only request tokens bound to pods scheduled on it",
                                             APIResources.serviceAccounts, name)
            }
        }
        let issued = try tokens.issue(account: account, audiences: audiences, seconds: seconds, pod: pod, now: Date())
        review["apiVersion"] = "authentication.k8s.io/v1"
        review["kind"] = "TokenRequest"
        review["metadata"] = ["name": .string(account.name), "namespace": .string(account.namespace), "creationTimestamp": .null]
        review["spec", default: [:]]["audiences"] = .array(audiences.map { .string($0) })
        review["spec", default: [:]]["expirationSeconds"] = .int(seconds)
        review["status"] = ["token": .string(issued.token), "expirationTimestamp": .string(Timestamp.format(issued.expires))]
        return Self.json(review, status: .created)
    }

    /// Upstream's ServiceAccount admission for a new pod: its account defaults to `default` (made
    /// now if the controller has not yet), must exist, and its `automountServiceAccountToken:
    /// false` carries over to a pod that does not say.
    func admitServiceAccount(_ pod: inout JSON) throws {
        let name = pod[path: "spec.serviceAccountName"]?.string.flatMap { $0.isEmpty ? nil : $0 }
            ?? pod[path: "spec.serviceAccount"]?.string.flatMap { $0.isEmpty ? nil : $0 } ?? "default"
        if name == "default", store.get("serviceaccounts", namespace: pod.namespace, name: name) == nil {
            do { _ = try store.create("serviceaccounts", PodDefaults.defaultServiceAccount(namespace: pod.namespace)) } catch StoreError.alreadyExists {}
        }
        guard let account = store.get("serviceaccounts", namespace: pod.namespace, name: name) else {
            throw APIError(code: 403, reason: "Forbidden",
                           message: "pods \"\(pod.name)\" is forbidden: error looking up service account \(pod.namespace)/\(name): serviceaccount \"\(name)\" not found",
                           name: pod.name, kind: "pods")
        }
        pod["spec", default: [:]]["serviceAccountName"] = .string(name)
        pod["spec", default: [:]]["serviceAccount"] = .string(name)
        if pod[path: "spec.automountServiceAccountToken"] == nil, account["automountServiceAccountToken"]?.bool == false {
            pod["spec", default: [:]]["automountServiceAccountToken"] = false
        }
    }
}
