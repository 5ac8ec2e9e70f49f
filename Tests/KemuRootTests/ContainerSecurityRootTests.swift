import Foundation
import Glibc
import KemuSystem
import Testing

/// What a pod may see and do on the machine, as a user finds out from inside it: it runs as an
/// unprivileged user in namespaces of its own, kemu's keys are out of its sight, and an unmodified
/// in-cluster client reaches the API with its ServiceAccount's rights and no more.
@Suite(.serialized, .enabled(if: isRoot, "creates network namespaces: run as root"))
struct ContainerSecurityRootTests {
    /// The python kubernetes client `make deps` installs, bound into pods at /mnt (a directory
    /// every Debian has): the repository may sit where other users cannot look (/root).
    static var sitePackages: String? {
        let lib = "\(packageRoot)/.venv/lib"
        guard let version = (try? FileManager.default.contentsOfDirectory(atPath: lib))?.first(where: { $0.hasPrefix("python3") }) else { return nil }
        return "\(lib)/\(version)/site-packages"
    }

    /// A pod of `account` with the python client at /mnt (PYTHONPATH), idle until exec'd into.
    static func clientPod(_ name: String, account: String, sitePackages: String) -> String {
        """
        {apiVersion: v1, kind: Pod, metadata: {name: \(name)}, spec: {serviceAccountName: \(account),
         volumes: [{name: client, hostPath: {path: \(sitePackages)}}],
         containers: [{name: c, image: pause, env: [{name: PYTHONPATH, value: /mnt}], volumeMounts: [{name: client, mountPath: /mnt}]}]}}
        """
    }

    static func manifest(sitePackages: String) -> String {
        """
        apiVersion: v1
        kind: ServiceAccount
        metadata: {name: reader}
        ---
        apiVersion: rbac.authorization.k8s.io/v1
        kind: Role
        metadata: {name: pod-reader}
        rules: [{apiGroups: [""], resources: [pods], verbs: [get, list]}]
        ---
        apiVersion: rbac.authorization.k8s.io/v1
        kind: RoleBinding
        metadata: {name: reader-reads-pods}
        roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
        subjects: [{kind: ServiceAccount, name: reader, namespace: default}]
        ---
        \(clientPod("reader", account: "reader", sitePackages: sitePackages))
        ---
        \(clientPod("plain", account: "default", sitePackages: sitePackages))
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: web}
        spec:
          containers: [{name: c, image: kemu/echo, args: [--port, "80"], ports: [{containerPort: 80}]}]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: custom}
        spec:
          securityContext: {runAsUser: 1234, runAsGroup: 5678, supplementalGroups: [4000]}
          automountServiceAccountToken: false
          containers: [{name: c, image: pause}]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: root}
        spec:
          containers: [{name: c, image: pause, securityContext: {runAsUser: 0}}]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: refuses-root}
        spec:
          securityContext: {runAsNonRoot: true}
          containers: [{name: c, image: pause, securityContext: {runAsUser: 0}}]
        """
    }

    /// Lists the pods of its namespace with the in-cluster configuration; prints the names, or
    /// the HTTP status the API answered.
    static let inClusterClient = """
        from kubernetes import client, config
        from kubernetes.client.rest import ApiException
        config.load_incluster_config()
        try:
            print(' '.join(sorted(p.metadata.name for p in client.CoreV1Api().list_namespaced_pod('default').items)))
        except ApiException as e:
            print('status', e.status)
        """

    @Test func podsRunConfinedAndReachTheAPIWithTheirAccountsRights() async throws {
        let sitePackages = try #require(Self.sitePackages, "the python client is installed by make deps")
        let c = TestCluster("rconfine")
        defer { c.release() }
        let up = try await c.up()
        #expect(up.status == .exited(0), "\(up.output)")
        #expect(try await c.kubectl(["apply"], stdin: Self.manifest(sitePackages: sitePackages)).status == .exited(0))
        let running = try await eventually(30) {
            try await c.jsonpath("pods", "{range .items[*]}{.metadata.name}={.status.phase} {end}")
                .split(separator: " ").filter { $0.hasSuffix("=Running") }.count == 5
        }
        let table = try await c.kubectl(["get", "pods", "-o", "wide"]).output
        #expect(running, "\(table)")

        // The in-cluster contract: env, token, CA, namespace; the python client as it is shipped.
        let listed = try await c.kemu(["exec", "reader", "--", "/usr/bin/python3", "-c", Self.inClusterClient])
        #expect(listed.output == "custom plain reader refuses-root root web\n", "\(listed.output)")
        let refused = try await c.kemu(["exec", "plain", "--", "/usr/bin/python3", "-c", Self.inClusterClient])
        #expect(refused.output == "status 403\n", "the default account may not list pods: \(refused.output)")
        let kubectlInside = try await c.kubectl(["exec", "reader", "--", "kubectl", "get", "pods", "-o", "name"])
        #expect(kubectlInside.output.contains("pod/web"), "\(kubectlInside.output)")
        let files = try await c.kemu(["exec", "plain", "--", "sh", "-c",
                                      "cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; echo $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT"])
        #expect(files.output == "default\n10.96.0.1:443\n", "\(files.output)")
        let noToken = try await c.kemu(["exec", "custom", "--", "ls", "/var/run/secrets/kubernetes.io/serviceaccount"])
        #expect(noToken.output.contains("No such file or directory"), "automountServiceAccountToken: false: \(noToken.output)")

        // Who the containers are, by kubectl exec and kemu exec alike: never root unless asked.
        #expect(try await c.kubectl(["exec", "plain", "--", "id"]).output == "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)\n")
        #expect(try await c.kemu(["exec", "plain", "--", "id", "-u"]).output == "65534\n")
        #expect(try await c.kubectl(["exec", "custom", "--", "id", "-G"]).output == "5678 4000\n")
        #expect(try await c.kubectl(["exec", "custom", "--", "id", "-u"]).output == "1234\n")
        #expect(try await c.kubectl(["exec", "plain", "--", "hostname"]).output == "plain\n")
        #expect(try await c.kubectl(["exec", "root", "--", "id", "-u"]).output == "0\n")
        let webPID = try await c.jsonpath("pod/web", "{.status.containerStatuses[0].containerID}").replacingOccurrences(of: "kemu://", with: "")
        #expect(ProcessIdentity.of(process: pid_t(webPID) ?? -1)?.user == 65534, "the echo server's own process: \(webPID)")
        // An unprivileged user listens on port 80 in its own pod.
        let ip = try await c.jsonpath("pod/web", "{.status.podIP}")
        let node = try await c.jsonpath("pod/web", "{.spec.nodeName}")
        let answer = try await c.kemu(["curl", "--from", node, "http://\(ip):80/?format=text"])
        #expect(answer.output.hasPrefix("pod=web "), "\(answer.output)")
        let refusedRoot = try await c.jsonpath("pod/refuses-root", "{.status.containerStatuses[0].state.waiting.reason}")
        #expect(refusedRoot == "CreateContainerConfigError")

        // kemu's keys and kubeconfigs are out of sight, even for a root container, which cannot
        // unmount what covers them (no CAP_SYS_ADMIN).
        let key = "\(c.state)/apiserver/pki/ca.key"
        #expect(FileSystem.exists(key))
        for pod in ["plain", "root"] {
            let read = try await c.kemu(["exec", pod, "--", "cat", key])
            #expect(read.status != .exited(0) && !read.output.contains("PRIVATE KEY"), "\(pod): \(read.output)")
            // Only the pod's own token directory (and volumes) show there, at their own paths.
            let listing = try await c.kemu(["exec", pod, "--", "ls", "-A", "/run/kemu", c.state])
            #expect(listing.output == "/run/kemu:\n\(c.name)\n\n\(c.state):\npod-files\n", "\(pod): \(listing.output)")
        }
        let unmount = try await c.kemu(["exec", "root", "--", "umount", "/run/kemu"])
        #expect(unmount.status != .exited(0), "\(unmount.output)")
        #expect(try await c.kemu(["exec", "root", "--", "cat", key]).status != .exited(0))
        // A container that is not running is not exec'd into (as root on the machine or otherwise).
        let notRunning = try await c.kubectl(["exec", "refuses-root", "--", "id"])
        #expect(notRunning.status != .exited(0) && notRunning.output.contains("not running"), "\(notRunning.output)")
    }
}
