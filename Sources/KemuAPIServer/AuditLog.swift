import Foundation
import Glibc
import KemuAPI
import KemuPKI
import KemuSystem
import Synchronization

/// `DATA-DIR/audit.log`: one JSON line per write, exec and refused request, in upstream's
/// audit.k8s.io/v1 Event shape at Metadata level (who, verb, what, the answer's code, when; never
/// bodies). The file is 0600 like the rest of the server's data; past `maxBytes` it moves to
/// `audit.log.1` (one old file kept), as `--audit-log-maxsize`/`--audit-log-maxbackup` do.
public final class AuditLog: Sendable {
    public let path: String
    let maxBytes: Int
    private let file: Mutex<(fd: FileDescriptor, size: Int)>

    public init(path: String, maxBytes: Int = 64 << 20) throws {
        self.path = path
        self.maxBytes = maxBytes
        let fd = try FileDescriptor(opening: path, flags: O_WRONLY | O_CREAT | O_APPEND, mode: 0o600)
        fchmod(fd.raw, 0o600)
        var info = stat()
        fstat(fd.raw, &info)
        file = Mutex((fd, Int(info.st_size)))
    }

    /// Which requests are recorded: every change, exec/attach/port-forward, and every refusal.
    static func wanted(_ a: RequestAttributes, code: Int) -> Bool {
        if code == 401 || code == 403 { return true }
        guard a.path == nil else { return false }
        return ["create", "update", "patch", "delete", "deletecollection"].contains(a.verb)
    }

    public struct Entry: Sendable {
        var attributes: RequestAttributes
        var user: Identity?
        var impersonatedBy: Identity?
        var uri: String
        var sourceIP: String?
        var userAgent: String?
        var code: Int
        var received: Date
        var decision: String?
    }

    func record(_ e: Entry) {
        var event: JSON = ["kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
                           "auditID": .string(UUID().uuidString.lowercased()), "stage": "ResponseComplete",
                           "requestURI": .string(String(e.uri.prefix(4096))), "verb": .string(e.attributes.verb)]
        let who = { (i: Identity) -> JSON in ["username": .string(i.user), "groups": .array(i.groups.map { .string($0) })] }
        if let impersonator = e.impersonatedBy {
            event["user"] = who(impersonator)
            if let user = e.user { event["impersonatedUser"] = who(user) }
        } else {
            event["user"] = e.user.map(who) ?? ["username": "system:anonymous", "groups": ["system:unauthenticated"]]
        }
        if let ip = e.sourceIP { event["sourceIPs"] = [.string(ip)] }
        if let agent = e.userAgent { event["userAgent"] = .string(String(agent.prefix(256))) }
        let a = e.attributes
        if a.path == nil {
            var ref: JSON = ["resource": .string(a.resource), "apiGroup": .string(a.group)]
            if !a.namespace.isEmpty { ref["namespace"] = .string(a.namespace) }
            if !a.name.isEmpty { ref["name"] = .string(a.name) }
            if !a.subresource.isEmpty { ref["subresource"] = .string(a.subresource) }
            event["objectRef"] = ref
        }
        event["responseStatus"] = ["metadata": [:], "code": .int(Int64(e.code))]
        event["requestReceivedTimestamp"] = .string(Self.micro(e.received))
        event["stageTimestamp"] = .string(Self.micro(Date()))
        if let decision = e.decision {
            event["annotations"] = ["authorization.k8s.io/decision": .string(e.code == 403 ? "forbid" : "allow"),
                                    "authorization.k8s.io/reason": .string(decision)]
        }
        write(event.text() + "\n")
    }

    private func write(_ line: String) {
        file.withLock { f in
            if f.size + line.utf8.count > maxBytes, let fresh = try? rotate() {
                f = (fresh, 0)
            }
            // An audit line that cannot be written is not worth failing the request over; a full
            // disk shows in the server's own log instead.
            do {
                try f.fd.write(line)
                f.size += line.utf8.count
            } catch {
                FileHandle.standardError.write(Data("kemu: audit log \(path): \(error)\n".utf8))
            }
        }
    }

    private func rotate() throws -> FileDescriptor {
        rename(path, path + ".1")
        return try FileDescriptor(opening: path, flags: O_WRONLY | O_CREAT | O_APPEND | O_TRUNC, mode: 0o600)
    }

    /// Upstream's audit timestamps: RFC 3339 with microseconds.
    static func micro(_ date: Date) -> String {
        let seconds = date.timeIntervalSince1970.rounded(.down)
        let micros = min(Int((date.timeIntervalSince1970 - seconds) * 1e6), 999_999)
        return String(format: "%@.%06dZ", String(Timestamp.format(date).dropLast()), micros)
    }
}
