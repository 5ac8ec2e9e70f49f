import Foundation
import KemuAPI
import Synchronization

public func pod(_ name: String, namespace: String = "default", labels: [String: String] = [:], node: String? = nil) -> JSON {
    var p: JSON = ["apiVersion": "v1", "kind": "Pod"]
    p.name = name
    p.namespace = namespace
    p.labels = labels
    p["spec"] = ["containers": [["name": "c", "image": "kemu/echo"]]]
    if let node { p["spec"]?["nodeName"] = .string(node) }
    return p
}

public func temporaryDirectory() -> String {
    NSTemporaryDirectory() + "kemu-store-\(UUID().uuidString)"
}

/// Collects the next `n` events of a stream (or fewer if it ends).
public func next(_ n: Int, _ stream: AsyncThrowingStream<WatchEvent, any Error>) async throws -> [WatchEvent] {
    var out: [WatchEvent] = []
    for try await e in stream {
        out.append(e)
        if out.count == n { break }
    }
    return out
}

/// Lines a handler appends from any task.
public final class Lines: Sendable {
    private let lines = Mutex<[String]>([])
    public init() {}

    public func append(_ line: String) { lines.withLock { $0.append(line) } }
    public var all: [String] { lines.withLock { $0 } }
}

/// Polls `check` every 50 ms until it holds or `seconds` pass; whether it held.
public func eventually(_ seconds: Double = 10, _ check: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if try await check() { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return try await check()
}
