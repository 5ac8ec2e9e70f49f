import Foundation
import Glibc
import KemuAPI
import KemuClient
import KemuSystem

/// Keeps `kemu up`'s daemons alive, as kubelet keeps static pods (`kemu supervise`, started by
/// `kemu up`): a daemon whose pid file is there but whose process is gone exited unexpectedly, and
/// is started again with the argv it was started with, after a back-off that doubles from 0.5 s to
/// 30 s (and resets once it has run for a minute). Each restart is an Event (reason
/// DaemonRestarted) and is counted in `supervisor.json`, which `kemu status` shows; three
/// restarts within two minutes make a crash loop. Whatever stops a daemon on purpose (`kemu stop`,
/// `kemu down`) removes its pid file first, so it is left alone.
public struct Supervisor: Sendable {
    public let files: ClusterFiles
    public var interval: Duration = .milliseconds(250)
    public static let name = "supervisor"

    public init(files: ClusterFiles) { self.files = files }

    public struct Record: Codable, Sendable, Equatable {
        public var restarts = 0
        /// Restart times, the last few, for the crash-loop rule.
        public var recent: [Date] = []
        public var backoff: Double = 0.5
        public var nextStart: Date?
        public var lastRestart: Date?
        public var lastStart = Date.distantPast

        /// `running`, `back-off 4s`, `crash-loop (back-off 8s)`.
        public func state(running: Bool, now: Date = Date()) -> String {
            if running { return "running" }
            let wait = nextStart.map { max(0, $0.timeIntervalSince(now)) } ?? 0
            let looping = recent.filter { now.timeIntervalSince($0) < 120 }.count >= 3
            return (looping ? "crash-loop, " : "") + String(format: "back-off %.0fs", wait.rounded(.up))
        }
    }

    var recordsPath: String { "\(files.state)/supervisor.json" }

    public static func records(_ files: ClusterFiles) -> [String: Record] {
        guard let text = try? FileSystem.readFile("\(files.state)/supervisor.json") else { return [:] }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .secondsSince1970
        return (try? decoder.decode([String: Record].self, from: Data(text.utf8))) ?? [:]
    }

    func save(_ records: [String: Record]) {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .secondsSince1970
        encoder.outputFormatting = .sortedKeys
        guard let data = try? encoder.encode(records) else { return }
        try? FileSystem.writeFile(recordsPath, String(decoding: data, as: UTF8.self), mode: 0o600)
    }

    /// Watches every daemon with a start spec until cancelled.
    public func run() async throws {
        var records = Self.records(files)
        while !Task.isCancelled {
            if step(&records, now: Date()) { save(records) }
            try await Task.sleep(for: interval)
        }
    }

    /// One look at every daemon; returns whether a record changed.
    func step(_ records: inout [String: Record], now: Date) -> Bool {
        var changed = false
        for name in Daemon.specs(files) where name != Self.name {
            guard let pid = Daemon.pid(name, files) else { continue }  // stopped on purpose
            var record = records[name] ?? Record()
            if Daemon.runs(name, pid, files), !Daemon.isZombie(pid) {
                if record.backoff > 0.5, now.timeIntervalSince(record.lastStart) > 60 { record.backoff = 0.5; records[name] = record; changed = true }
                continue
            }
            _ = waitpid(pid, nil, WNOHANG)
            guard let next = record.nextStart else {
                record.nextStart = now.addingTimeInterval(record.backoff)
                records[name] = record
                changed = true
                continue
            }
            guard now >= next else { continue }
            do {
                let started = try Daemon.restart(name, files)
                record.restarts += 1
                record.recent = (record.recent + [now]).suffix(5)
                record.lastRestart = now
                record.lastStart = now
                record.nextStart = nil
                let delay = record.backoff
                record.backoff = min(record.backoff * 2, 30)
                records[name] = record
                changed = true
                let message = "kemu \(Self.describe(name)) exited unexpectedly; restarted as pid \(started) after \(String(format: "%.1f", delay)) s (restart \(record.restarts))"
                FileHandle.standardError.write(Data("supervisor: \(message)\n".utf8))
                let files = self.files
                Task.detached { await Self.record(files, name, message) }
            } catch {
                record.nextStart = now.addingTimeInterval(record.backoff)
                record.backoff = min(record.backoff * 2, 30)
                records[name] = record
                changed = true
                FileHandle.standardError.write(Data("supervisor: cannot restart \(name): \(error)\n".utf8))
            }
        }
        return changed
    }

    /// `node-node-1` → `node (node-1)`.
    static func describe(_ name: String) -> String {
        for prefix in ["node-", "proxy-"] where name.hasPrefix(prefix) {
            return "\(prefix.dropLast()) (\(name.dropFirst(prefix.count)))"
        }
        return name
    }

    /// An Event about the restart, on the node for its agent and proxy, else on kube-system; the
    /// API server may itself be coming back, so a few tries.
    static func record(_ files: ClusterFiles, _ name: String, _ message: String) async {
        var object: JSON = ["apiVersion": "v1", "kind": "Namespace"]
        object.name = "kube-system"
        var kind = "Namespace"
        for prefix in ["node-", "proxy-"] where name.hasPrefix(prefix) {
            object = ["apiVersion": "v1", "kind": "Node"]
            object.name = String(name.dropFirst(prefix.count))
            kind = "Node"
        }
        let event = Events.make(for: object, kind: kind, type: "Warning", reason: "DaemonRestarted", message: message,
                                component: "kemu-supervisor", at: Timestamp.now())
        for _ in 0..<20 {
            if let config = try? Kubeconfig.load(path: files.kubeconfig), let client = try? APIClient(kubeconfig: config),
               (try? await client.create(APIResources.events, event)) != nil { return }
            try? await Task.sleep(for: .milliseconds(500))
        }
    }
}
