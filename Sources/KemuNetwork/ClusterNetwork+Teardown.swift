import Foundation
import Glibc
import KemuSystem

extension ClusterNetwork {
    /// What `teardown` removed.
    public struct TeardownReport: Sendable {
        public var namespaces: [String] = []
        public var killedProcesses: [pid_t] = []
        public var etcDirectories: [String] = []
    }

    /// `kemu net down`: removes every namespace, /etc/netns entry and process of `cluster`, found
    /// by name, so it also cleans up after a crash. A cluster that is not there is not an error.
    @discardableResult
    public static func teardown(cluster: String, backend: any NetworkBackend = KernelBackend(),
                                stateDirectory: String? = nil) throws -> TeardownReport {
        guard ClusterConfig.isClusterName(cluster) else {
            throw KemuError(.invalidArgument, "cluster name \"\(cluster)\" is not valid (1-\(ClusterConfig.maxNameLength) lower-case letters and digits)")
        }
        let prefix = AddressPlan(ClusterConfig.named(cluster)).prefix
        var report = TeardownReport()
        // Pods first, the fabric last: the reverse of building.
        let namespaces = backend.namespaceNames().filter { $0.hasPrefix(prefix) }.sorted { rank($0, prefix) < rank($1, prefix) }
        for namespace in namespaces {
            for pid in backend.processes(in: namespace) {
                try backend.kill(pid)
                report.killedProcesses.append(pid)
            }
        }
        var failures: [String] = []
        for namespace in namespaces {
            do {
                try backend.deleteNamespace(namespace)
                report.namespaces.append(namespace)
            } catch {
                failures.append("\(error)")
            }
        }
        for stray in backend.etcNamespaceNames() where stray.hasPrefix(prefix) {
            do {
                try backend.deleteNamespace(stray)
                report.etcDirectories.append(stray)
            } catch {
                failures.append("\(error)")
            }
        }
        try FileSystem.removeTree(stateDirectory ?? defaultStateDirectory(cluster))
        // The machine-wide limits `up` raised go back with the machine's last cluster.
        do {
            try backend.restoreHostLimits(unless: { backend.namespaceNames().contains { $0.hasPrefix("kemu-") } })
        } catch {
            failures.append("restoring the kernel's neighbour table limits: \(error)")
        }
        if stateDirectory == nil { removeMountPoints() }
        waitUntilGone(report.killedProcesses)
        if !failures.isEmpty {
            throw KemuError(.system, "tearing down cluster \(cluster) left things behind:\n  " + failures.joined(separator: "\n  "))
        }
        return report
    }

    /// Where every container finds its ServiceAccount files: an empty directory on the machine
    /// (made by the first node agent that needs it), bound over in each container's mount namespace.
    public static let serviceAccountMountPoint = "/var/run/secrets/kubernetes.io/serviceaccount"

    /// The mount point goes with the last cluster (removing it while another runs would detach
    /// its containers' token mounts), and only while empty.
    static func removeMountPoints() {
        let root = (defaultStateDirectory("x") as NSString).deletingLastPathComponent
        var info = stat()
        // Another cluster's state directory (files there, such as the current cluster's name, are not clusters).
        guard !FileSystem.list(root).contains(where: { stat("\(root)/\($0)", &info) == 0 && info.st_mode & S_IFMT == S_IFDIR }) else { return }
        var path = serviceAccountMountPoint
        while path != "/var/run" && path != "/" {
            guard rmdir(path) == 0 else { return }
            path = (path as NSString).deletingLastPathComponent
        }
    }

    private static func rank(_ namespace: String, _ prefix: String) -> Int {
        let host = namespace.dropFirst(prefix.count)
        if host.hasPrefix("p-") { return 0 }
        if host == "fabric" { return 3 }
        if ClusterConfig.reservedHostNames.contains(String(host)) { return 2 }
        return 1
    }

    /// SIGKILL is asynchronous: wait (up to 2 s) until the killed processes are gone, so "nothing
    /// left" holds when teardown returns.
    private static func waitUntilGone(_ pids: [pid_t]) {
        let deadline = Date().addingTimeInterval(2)
        for pid in pids {
            // Reap our own children; others vanish from /proc by themselves.
            while Date() < deadline {
                if waitpid(pid, nil, WNOHANG) == pid || kill(pid, 0) != 0 { break }
                usleep(5_000)
            }
        }
    }
}

extension ClusterConfig {
    /// A config that differs from the defaults only by name.
    static func named(_ name: String) -> ClusterConfig {
        var config = ClusterConfig()
        config.name = name
        return config
    }
}
