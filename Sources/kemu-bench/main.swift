import Foundation
import Glibc
import KemuSystem

// make bench: every part in one run, each printing a Markdown table and writing it to
// bench-results/; `kemu-bench PART` runs one. A part that fails says why on stderr and the others
// still run; the exit status then says one failed.

let args = CommandLine.arguments
let root = FileManager.default.currentDirectoryPath

func option(_ name: String, _ fallback: Int) -> Int {
    guard let i = args.firstIndex(of: name), i + 1 < args.count, let v = Int(args[i + 1]) else { return fallback }
    return v
}

struct Part {
    let name: String
    let about: String
    /// Run by `make bench` (no part named); else only when named.
    var everyRun = true
    var needsRoot = true
    let run: () async throws -> Void
}

let parts: [Part] = [
    Part(name: "api", about: "the API server: requests/s, watch fan-out, heartbeats", needsRoot: false) { try await APIBench.run(root: root) },
    Part(name: "cluster", about: "cluster up and down, memory per node") { try await ClusterBench.run(root: root) },
    Part(name: "workload", about: "Deployment create, rollout, node crash → replaced") { try await WorkloadBench.run(root: root) },
    Part(name: "chaos", about: "the failover lab: errors and recovery when endpoints die") { try await ChaosBench.run(root: root) },
    Part(name: "proxy", about: "the node proxy against the direct path and HAProxy/nginx") { try await ProxyBench.run(root: root) },
    Part(name: "fidelity", about: "UDP, source addresses, NetworkPolicy") { try await FidelityBench.run(root: root) },
    Part(name: "mesh", about: "meshed against plain through the proxies, and an HAProxy mutual-TLS pair") { try await MeshBench.run(root: root) },
    Part(name: "split", about: "a route's weights changed → new connections follow") { try await SplitBench.run(root: root) },
    Part(name: "sandboxes", about: "pod sandboxes per second against iproute2 (--sandboxes N, --script-sandboxes N)") {
        try SandboxBench.run(root: root, sandboxes: option("--sandboxes", 1000), scriptSandboxes: option("--script-sandboxes", 100))
    },
    Part(name: "scale", about: "one big cluster (--nodes N, --pods N): minutes, make bench-scale", everyRun: false) {
        try await ScaleBench.run(root: root, nodes: option("--nodes", 100), pods: option("--pods", 1000))
    },
    Part(name: "proxy-sync", about: "the proxy's control-plane half alone: programming latency, 10,000 Services", everyRun: false) {
        print(try await ProxyBench.programming(kemu: "\(root)/.build/release/kemu"))
        print(try await ProxyBench.scale(kemu: "\(root)/.build/release/kemu"))
    },
]

func fail(_ message: String, status: Int32) -> Never {
    FileHandle.standardError.write(Data((message + "\n").utf8))
    exit(status)
}

// The words that name a part: not options, nor an option's value (element i follows args[i]).
let words = args.dropFirst().enumerated().filter { i, word in !word.hasPrefix("-") && !args[i].hasPrefix("--") }.map(\.element)
if args.contains("--help") || args.contains("-h") || words.first == "help" {
    print("usage: kemu-bench [PART] [--sandboxes N] [--script-sandboxes N] [--nodes N] [--pods N]\n\n"
          + "Without PART, every part but scale and proxy-sync, in this order. Run from the repository, after make release.\n")
    for part in parts { print("  \(part.name.padding(toLength: 12, withPad: " ", startingAt: 0)) \(part.about)") }
    exit(0)
}
if words.count > 1 { fail("kemu-bench: one part at a time (got \(words.joined(separator: ", "))); see kemu-bench --help", status: 2) }
let chosen: [Part]
if let name = words.first {
    guard let part = parts.first(where: { $0.name == name }) else {
        fail("kemu-bench: no part \"\(name)\"; the parts: \(parts.map(\.name).joined(separator: ", "))", status: 2)
    }
    chosen = [part]
} else {
    chosen = parts.filter(\.everyRun)
}
if getuid() != 0, let part = chosen.first(where: \.needsRoot) {
    fail("kemu-bench \(part.name) needs root (it creates network namespaces and clusters); run it as root, or `make bench`", status: 1)
}
var failed: [String] = []
for part in chosen {
    do {
        try await part.run()
    } catch {
        FileHandle.standardError.write(Data("kemu-bench \(part.name) failed: \(error)\n".utf8))
        failed.append(part.name)
    }
}
if !failed.isEmpty { fail("kemu-bench: \(failed.count) of \(chosen.count) part(s) failed: \(failed.joined(separator: ", "))", status: 1) }
