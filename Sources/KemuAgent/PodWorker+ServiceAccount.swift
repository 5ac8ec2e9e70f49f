import KemuAPI
import KemuClient
import KemuNetwork
import KemuSystem

/// Upstream's in-cluster contract, as kubelet keeps it with the projected `kube-api-access`
/// volume: `token` (a TokenRequest bound to this pod, renewed at 80 % of its life), `ca.crt` and
/// `namespace` at /var/run/secrets/kubernetes.io/serviceaccount in every container, unless the
/// pod (or, through admission, its ServiceAccount) says `automountServiceAccountToken: false`.
/// With KUBERNETES_SERVICE_HOST/PORT in the environment, an unmodified in-cluster client reaches
/// the API through the `kubernetes` Service with its ServiceAccount's rights, and no more.
extension PodWorker {
    static let tokenMountPath = ClusterNetwork.serviceAccountMountPoint
    /// kubelet's request: an hour and a few seconds (upstream's 3607), renewed at 80 %.
    static let tokenSeconds: Int64 = 3607

    /// DIR/<uid>/serviceaccount on the node: bound over `tokenMountPath` in each container.
    var tokenDirectory: String { "\(agent.config.podDirectory)/\(uid)/serviceaccount" }

    var mountsToken: Bool {
        pod[path: "spec.automountServiceAccountToken"]?.bool != false && agent.config.clusterCA != nil
    }

    /// Asks for a token until one comes (the API server may be restarting), showing why the
    /// containers wait meanwhile; then renews it in the background. False if the pod was stopped.
    func mountServiceAccount() async -> Bool {
        guard await retryingMount({ try await self.writeServiceAccountFiles() },
                                  failure: { "MountVolume.SetUp failed for volume \"kube-api-access\": \($0)" }) else { return false }
        renewToken(after: .seconds(Self.tokenSeconds * 8 / 10))
        return true
    }

    func writeServiceAccountFiles() async throws {
        let account = pod[path: "spec.serviceAccountName"]?.string.flatMap { $0.isEmpty ? nil : $0 } ?? "default"
        let request: JSON = ["apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                             "spec": ["expirationSeconds": .int(Self.tokenSeconds),
                                      "boundObjectRef": ["apiVersion": "v1", "kind": "Pod", "name": .string(name), "uid": .string(uid)]]]
        let answer = try await agent.client.create(APIResources.serviceAccounts, namespace: namespace, name: account,
                                                   subresource: "token", request)
        guard let token = answer[path: "status.token"]?.string, !token.isEmpty else {
            throw KemuError(.invalidState, "the TokenRequest for serviceaccount \(namespace)/\(account) came back without a token")
        }
        try FileSystem.makeDirectories(tokenDirectory, mode: 0o755)
        try FileSystem.writeFile("\(tokenDirectory)/ca.crt", agent.config.clusterCA ?? "")
        try FileSystem.writeFile("\(tokenDirectory)/namespace", namespace)
        try FileSystem.writeFile("\(tokenDirectory)/token", token)  // renamed into place: never half a token
    }

    /// Renews the token after `delay`, then every 80 % of its life; a failed renewal is retried
    /// in 10 s while the old token still holds.
    func renewToken(after delay: Duration) {
        tokenTask?.cancel()
        tokenTask = Task { [weak self] in
            var wait = delay
            while !Task.isCancelled {
                try? await Task.sleep(for: wait)
                guard !Task.isCancelled, let self else { return }
                do {
                    try await self.writeServiceAccountFiles()
                    wait = .seconds(Self.tokenSeconds * 8 / 10)
                } catch {
                    self.logger.warning("renewing the ServiceAccount token: \(error)")
                    wait = .seconds(10)
                }
            }
        }
    }

    /// The node's files for this pod, once it is gone.
    func removePodFiles() {
        tokenTask?.cancel()
        volumeTask?.cancel()
        try? FileSystem.removeTree("\(agent.config.podDirectory)/\(uid)")
    }
}
