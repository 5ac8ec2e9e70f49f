import Foundation
import KemuAPI
import KemuStore
import Logging
import Synchronization

/// The mesh CA's approver and signer together, for CertificateSigningRequests whose signerName is
/// `kemu.dev/mesh`: a node (`system:node:NAME`, as the API server recorded in `spec.username`)
/// gets its own proxy's identity and the identities of the ServiceAccounts of pods bound to it,
/// nothing else (Istio's CA checks a ztunnel's requests the same way). Each request ends
/// Approved with `status.certificate`, Denied (not the node's to ask for) or Failed (a malformed
/// request), with a message saying why.
public final class MeshCertificateSigner: Sendable {
    /// Checks the request (PEM), lets the closure it is given refuse the identity asked for, and
    /// signs it for the seconds given: the certificate (PEM).
    public typealias Sign = @Sendable (_ requestPEM: String, _ seconds: Int, _ authorize: (SPIFFEID) throws -> Void) throws -> String

    static let resource = "certificatesigningrequests.certificates.k8s.io"
    let store: Store
    let trustDomain: String
    let sign: Sign
    /// Stopped (the lab's "stop the mesh CA"): requests wait, unanswered, until it runs again.
    let paused = Atomic<Bool>(false)
    /// Where the lab says "stopped" (`Mesh.caStopFile` in the data directory); nil: only
    /// `setPaused` stops it.
    let stopFile: String?
    let logger = Logger(label: "kemu.mesh-ca")

    public init(store: Store, trustDomain: String, stopFile: String? = nil, sign: @escaping Sign) {
        self.store = store
        self.trustDomain = trustDomain
        self.stopFile = stopFile
        self.sign = sign
    }

    public func run() async throws {
        // Stopped before it started (a control plane restarted during `kemu stop mesh-ca`):
        // nothing listed at the start is answered.
        if let stopFile, access(stopFile, F_OK) == 0 { paused.store(true, ordering: .relaxed) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await rewatching(self.logger) { try await self.follow() } }
            if let stopFile {
                group.addTask {
                    // Looked at five times a second: a stop or start takes effect within 200 ms.
                    while !Task.isCancelled {
                        let stopped = access(stopFile, F_OK) == 0
                        if stopped != self.paused.load(ordering: .relaxed) {
                            self.logger.warning("mesh CA \(stopped ? "stopped: requests wait unanswered" : "running again")")
                            self.setPaused(stopped)
                        }
                        try await Task.sleep(for: .milliseconds(200))
                    }
                }
            }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    func follow() async throws {
        let events = try store.watch(WatchFilter(Self.resource), from: store.revision)
        for request in store.list(Self.resource).items { handle(request) }
        for try await e in events where e.type != .deleted { handle(e.object) }
    }

    struct Refusal: Error {
        let denied: Bool
        let message: String
    }

    func handle(_ request: JSON) {
        guard request[path: "spec.signerName"]?.string == Mesh.signerName, request[path: "status.certificate"] == nil,
              !(request[path: "status.conditions"]?.array ?? []).contains(where: { ["Denied", "Failed"].contains($0["type"]?.string) }),
              !paused.load(ordering: .relaxed) else { return }
        let outcome: Result<String, Refusal>
        do {
            outcome = .success(try issue(request))
        } catch let refusal as Refusal {
            outcome = .failure(refusal)
        } catch {
            outcome = .failure(Refusal(denied: false, message: "\(error)"))
        }
        do {
            try store.modify(Self.resource, name: request.name, part: .status) { o in
                guard o.uid == request.uid, o[path: "status.certificate"] == nil else { return }
                var status = o["status"] ?? [:]
                let now = Timestamp.now()
                switch outcome {
                case let .success(pem):
                    status["conditions"] = [["type": "Approved", "status": "True", "reason": "KemuMeshAutoApproved",
                                             "message": "the node runs a pod with this identity", "lastUpdateTime": .string(now),
                                             "lastTransitionTime": .string(now)]]
                    status["certificate"] = .string(Data(pem.utf8).base64EncodedString())
                case let .failure(refusal):
                    status["conditions"] = [["type": refusal.denied ? "Denied" : "Failed", "status": "True",
                                             "reason": refusal.denied ? "KemuMeshNotBoundHere" : "KemuMeshInvalidRequest",
                                             "message": .string(refusal.message), "lastUpdateTime": .string(now), "lastTransitionTime": .string(now)]]
                }
                o["status"] = status
            }
        } catch StoreError.notFound {
        } catch {
            logger.warning("certificatesigningrequest \(request.name): \(error)")
        }
    }

    /// The certificate for a request the node may make.
    func issue(_ request: JSON) throws -> String {
        let user = request[path: "spec.username"]?.string ?? ""
        guard user.hasPrefix("system:node:"), user.count > "system:node:".count,
              (request[path: "spec.groups"]?.array ?? []).contains(where: { $0.string == "system:nodes" }) else {
            throw Refusal(denied: true, message: "only node proxies (system:node:NAME in system:nodes) may ask for mesh certificates; \(user.isEmpty ? "an unknown user" : user) may not")
        }
        let node = String(user.dropFirst("system:node:".count))
        guard let encoded = request[path: "spec.request"]?.string, let der = Data(base64Encoded: encoded), let pem = String(data: der, encoding: .utf8) else {
            throw Refusal(denied: false, message: "spec.request is not base64")
        }
        let asked = request[path: "spec.expirationSeconds"]?.int ?? Int64(Mesh.defaultCertificateSeconds)
        let seconds = Int(min(max(asked, Int64(Mesh.minimumCertificateSeconds)), Int64(Mesh.defaultCertificateSeconds)))
        return try sign(pem, seconds) { id in
            guard id.trustDomain == trustDomain else {
                throw Refusal(denied: true, message: "\(id) is outside the trust domain \(trustDomain)")
            }
            if let name = id.nodeName {
                guard name == node else { throw Refusal(denied: true, message: "node \(node) may not ask for node \(name)'s identity") }
                return
            }
            guard let (namespace, account) = id.workload else {
                throw Refusal(denied: true, message: "\(id) is neither a workload (/ns/NS/sa/SA) nor a node proxy (/kemu/node/NAME) identity")
            }
            let bound = store.list("pods", namespace: namespace).items.contains { pod in
                pod[path: "spec.nodeName"]?.string == node && (pod[path: "spec.serviceAccountName"]?.string ?? "default") == account
                    && !["Succeeded", "Failed"].contains(pod[path: "status.phase"]?.string ?? "")
            }
            guard bound else {
                throw Refusal(denied: true, message: "no pod with ServiceAccount \(namespace)/\(account) is bound to node \(node)")
            }
        }
    }

    /// Stops or resumes signing; resuming answers what waited.
    public func setPaused(_ value: Bool) {
        paused.store(value, ordering: .relaxed)
        if !value { for request in store.list(Self.resource).items { handle(request) } }
    }
}
