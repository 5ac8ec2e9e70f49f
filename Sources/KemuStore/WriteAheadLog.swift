import Foundation
import KemuAPI

/// When the store's log reaches the disk itself, not only the page cache.
public enum SyncPolicy: String, Sendable, CaseIterable {
    /// fdatasync(2) after every write, before it is acknowledged (etcd's behaviour): a power loss
    /// loses nothing acknowledged; each write costs a disk flush.
    case always
    /// fdatasync(2) at most once a second, on the write that finds the last one older: a kill -9
    /// loses nothing acknowledged (write(2) came first), a power loss the writes since the last
    /// sync — at most about a second's worth while writes keep coming, and what the kernel had not
    /// yet written back (≤ 30 s by default) after the last write of a quiet spell.
    case batch
}

/// The store on disk: `snapshot.jsonl` (a header line with the revision, then one line per object)
/// and `log.jsonl` (one line per write since the snapshot). Each write is appended with one write(2)
/// before the store acknowledges it, so it survives kill -9 of the process (the page cache keeps
/// it); `SyncPolicy` says when it is also flushed to the disk. A torn last line (a crash
/// mid-append, a power loss) is dropped on load.
final class WriteAheadLog: @unchecked Sendable {
    let directory: String
    let compactAfterBytes: Int
    let sync: SyncPolicy
    private var lastSync = ContinuousClock.now
    private var log: FileHandle
    private(set) var bytes = 0

    var logPath: String { "\(directory)/log.jsonl" }
    var snapshotPath: String { "\(directory)/snapshot.jsonl" }

    init(directory: String, compactAfterBytes: Int, sync: SyncPolicy = .batch) throws {
        self.directory = directory
        self.compactAfterBytes = compactAfterBytes
        self.sync = sync
        // The cluster's objects (Secrets among them) are the server's alone: 0700 and 0600, also
        // for a data directory an earlier version left readable.
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        if !FileManager.default.fileExists(atPath: "\(directory)/log.jsonl") {
            guard FileManager.default.createFile(atPath: "\(directory)/log.jsonl", contents: nil, attributes: [.posixPermissions: 0o600]) else {
                throw StoreError.invalid("cannot create \(directory)/log.jsonl")
            }
        }
        chmod(directory, 0o700)
        for file in ["log.jsonl", "snapshot.jsonl"] { chmod("\(directory)/\(file)", 0o600) }
        guard let handle = FileHandle(forUpdatingAtPath: "\(directory)/log.jsonl") else {
            throw StoreError.invalid("cannot open \(directory)/log.jsonl for writing")
        }
        log = handle
    }

    var wantsCompaction: Bool { bytes > compactAfterBytes }

    /// Everything on disk: the snapshot, then the log replayed over it, with the changes the log
    /// holds (so watches can resume across a restart from any revision since the snapshot).
    func load() throws -> (revision: Int64, snapshotRevision: Int64, objects: [(String, JSON)], changes: [Change]) {
        var revision: Int64 = 0
        var changes: [Change] = []
        var objects: [String: JSON] = [:]  // "resource/namespace/name" → object
        var resources: [String: String] = [:]
        func key(_ r: String, _ o: JSON) -> String { "\(r)/\(o.namespace)/\(o.name)" }

        if let data = FileManager.default.contents(atPath: snapshotPath) {
            for (i, line) in data.split(separator: 0x0A).enumerated() {
                let record = try parse(line, file: snapshotPath, line: i + 1)
                if i == 0 { revision = record["revision"]?.int ?? 0; continue }
                guard let r = record["resource"]?.string, let o = record["object"] else { continue }
                objects[key(r, o)] = o
                resources[key(r, o)] = r
            }
        }
        let snapshotRevision = revision
        let data = try log.readToEnd() ?? Data()
        var good = 0
        let lines = data.split(separator: 0x0A, omittingEmptySubsequences: false)
        for (i, line) in lines.enumerated() where !line.isEmpty {
            let record: JSON
            do {
                record = try parse(line, file: logPath, line: i + 1)
            } catch where i == lines.count - 1 || (i == lines.count - 2 && lines.last?.isEmpty == true) {
                break  // torn final append: the write was never acknowledged
            }
            good += line.count + 1
            guard let rev = record["revision"]?.int, rev > revision,
                  let r = record["resource"]?.string, let o = record["object"] else { continue }
            revision = rev
            let old = objects[key(r, o)]
            let deleted = record["deleted"]?.bool == true
            changes.append(Change(revision: rev, resource: r, old: old, new: deleted ? nil : o, deleted: deleted ? o : nil))
            if deleted {
                objects[key(r, o)] = nil
            } else {
                objects[key(r, o)] = o
                resources[key(r, o)] = r
            }
        }
        if good < data.count {
            try log.truncate(atOffset: UInt64(good))
        }
        try log.seekToEnd()
        bytes = good
        return (revision, snapshotRevision, objects.compactMap { entry in resources[entry.key].map { ($0, entry.value) } }, changes)
    }

    private func parse(_ line: Data.SubSequence, file: String, line number: Int) throws -> JSON {
        do { return try JSON.parse(Array(line)) } catch {
            throw StoreError.invalid("\(file) line \(number) is corrupt: \(error)")
        }
    }

    func append(revision: Int64, resource: String, object: JSON, deleted: Bool) throws {
        var record: JSON = ["revision": .int(revision), "resource": .string(resource)]
        if deleted { record["deleted"] = true }
        record["object"] = object
        var line = record.bytes()
        line.append(0x0A)
        try log.write(contentsOf: line)
        bytes += line.count
        let now = ContinuousClock.now
        if sync == .always || now - lastSync >= .seconds(1) {
            guard fdatasync(log.fileDescriptor) == 0 else {
                throw StoreError.invalid("cannot sync \(logPath): \(String(cString: strerror(errno)))")
            }
            lastSync = now
        }
    }

    /// Writes every object as the new snapshot, durably, then empties the log.
    func snapshot(revision: Int64, objects: [(String, JSON)]) throws {
        var out: [UInt8] = []
        (["revision": .int(revision)] as JSON).write(to: &out)
        out.append(0x0A)
        for (resource, object) in objects {
            (["resource": .string(resource), "object": object] as JSON).write(to: &out)
            out.append(0x0A)
        }
        // New snapshot beside the old, synced, renamed over it (rename(2) replaces atomically:
        // there is always a whole snapshot on disk), then the directory synced so the rename
        // itself survives a power loss.
        let temporary = snapshotPath + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: Data(out), attributes: [.posixPermissions: 0o600]),
              let handle = FileHandle(forUpdatingAtPath: temporary) else { throw StoreError.invalid("cannot write \(temporary)") }
        try handle.synchronize()
        try handle.close()
        guard rename(temporary, snapshotPath) == 0 else {
            throw StoreError.invalid("cannot rename \(temporary) over \(snapshotPath): \(String(cString: strerror(errno)))")
        }
        let directoryFD = open(directory, O_RDONLY | O_DIRECTORY)
        if directoryFD >= 0 {
            _ = fsync(directoryFD)
            close(directoryFD)
        }
        // Only now is the log redundant: a crash before this line replays it over the new snapshot,
        // skipping what the snapshot already holds.
        try log.truncate(atOffset: 0)
        try log.seekToEnd()
        bytes = 0
    }
}
