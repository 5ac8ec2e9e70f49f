import ArgumentParser
import Foundation
import Glibc
import KemuNetwork
import KemuSystem

struct Down: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stop a cluster's daemons and pods and remove everything of it, found by name (also after a crash).")

    @OptionGroup var options: ClusterOptions

    func run() throws {
        try requireRoot("kemu down")
        let cluster = try options.clusterName()
        let files = ClusterFiles(cluster: cluster)
        let stopped = Self.stopDaemons(files)
        let report = try ClusterNetwork.teardown(cluster: cluster)
        if stopped.isEmpty && report.namespaces.isEmpty && report.etcDirectories.isEmpty {
            print("cluster \(cluster): nothing to remove")
        } else {
            print("cluster \(cluster): stopped \(stopped.count) daemons, removed \(report.namespaces.count) namespaces, killed \(report.killedProcesses.count) processes")
        }
    }

    /// SIGTERM to every daemon with a pid file (agents first, the server last), SIGKILL to any
    /// still running after 5 s. Only pids that still run kemu are signalled.
    @discardableResult
    static func stopDaemons(_ files: ClusterFiles) -> [String] {
        let names = files.daemons.sorted { ($0 == "server" ? 1 : 0, $0) < ($1 == "server" ? 1 : 0, $1) }
        var signalled: [(String, pid_t)] = []
        for name in names {
            guard let pid = Daemon.pid(name, files), Daemon.isKemu(pid) else { continue }
            kill(pid, SIGTERM)
            signalled.append((name, pid))
        }
        let deadline = Date().addingTimeInterval(5)
        for (_, pid) in signalled {
            while Daemon.isKemu(pid) && Date() < deadline {
                _ = waitpid(pid, nil, WNOHANG)
                usleep(10_000)
            }
            if Daemon.isKemu(pid) { kill(pid, SIGKILL) }
        }
        for name in names { try? FileSystem.removeFile(files.pidFile(name)) }
        return signalled.map(\.0)
    }
}
