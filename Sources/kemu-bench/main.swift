import Foundation
import Glibc
import KemuNetwork
import KemuSystem
import Synchronization

// make bench: pod sandboxes created and deleted per second and kernel memory per sandbox, kemu
// (libnl, in process) against iproute2 (netns-scripts/pod.sh, one `ip` command at a time), in one
// run on this machine. Prints a Markdown table and writes it to bench-results/.

let args = CommandLine.arguments
let root = FileManager.default.currentDirectoryPath
let only = args.dropFirst().first { !$0.hasPrefix("--") && Int($0) == nil }
if only == nil || only == "api" {
    try await APIBench.run(root: root)
}
if only == "api" { exit(0) }
guard getuid() == 0 else {
    FileHandle.standardError.write("kemu-bench sandboxes needs root (it creates network namespaces)\n".data(using: .utf8)!)
    exit(1)
}
if only == nil || only == "cluster" {
    try await ClusterBench.run(root: root)
}
if only == "cluster" { exit(0) }
if only == nil || only == "workload" {
    try await WorkloadBench.run(root: root)
}
if only == "workload" { exit(0) }
if only == nil || only == "chaos" {
    try await ChaosBench.run(root: root)
}
if only == "chaos" { exit(0) }
if only == "scale" {  // make bench-scale: minutes, so never part of the plain run
    try await ScaleBench.run(root: root, nodes: option("--nodes", 100), pods: option("--pods", 1000))
    exit(0)
}
if only == nil || only == "proxy" {
    try await ProxyBench.run(root: root)
}
if only == nil || only == "fidelity" {
    try await FidelityBench.run(root: root)
}
if only == "fidelity" { exit(0) }
if only == nil || only == "mesh" {
    try await MeshBench.run(root: root)
}
if only == nil || only == "mesh" || only == "split" {
    try await SplitBench.run(root: root)
}
if only == "mesh" || only == "split" { exit(0) }
if only == "proxy" { exit(0) }
if only == "proxy-sync" {  // the control-plane half alone, for quick checks
    print(try await ProxyBench.programming(kemu: "\(root)/.build/release/kemu"))
    print(try await ProxyBench.scale(kemu: "\(root)/.build/release/kemu"))
    exit(0)
}

func option(_ name: String, _ fallback: Int) -> Int {
    guard let i = args.firstIndex(of: name), i + 1 < args.count, let v = Int(args[i + 1]) else { return fallback }
    return v
}
let sandboxes = option("--sandboxes", 1000)
let scriptSandboxes = option("--script-sandboxes", 100)
let podsPerNode = 250
let nodes = (sandboxes + podsPerNode - 1) / podsPerNode

/// kB of memory in use (MemTotal − MemAvailable) and in kernel slab, from /proc/meminfo.
func memory() -> (used: Int, slab: Int) {
    var values: [String: Int] = [:]
    for line in (try? FileSystem.readFile("/proc/meminfo"))?.split(separator: "\n") ?? [] {
        let parts = line.split(separator: " ", omittingEmptySubsequences: true)
        if parts.count >= 2, let v = Int(parts[1]) { values[String(parts[0].dropLast())] = v }
    }
    return (values["MemTotal", default: 0] - values["MemAvailable", default: 0], values["Slab", default: 0])
}

/// Times the machine's ARP table was full and a packet waiting on a new entry was dropped: the
/// last column of /proc/net/stat/arp_cache (hex, one row per CPU).
func neighbourTableFulls() -> Int {
    let rows = ((try? FileSystem.readFile("/proc/net/stat/arp_cache")) ?? "").split(separator: "\n").dropFirst()
    return rows.compactMap { $0.split(separator: " ").last.flatMap { Int($0, radix: 16) } }.reduce(0, +)
}

func seconds(_ body: () throws -> Void) rethrows -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

func sh(_ argv: [String]) throws {
    let pid = try Spawn.spawn(argv, Spawn.Options())
    let status = try Spawn.wait(pid)
    guard status == .exited(0) else { throw KemuError(.system, "\(argv.joined(separator: " ")): \(status)") }
}

/// Network namespaces the kernel holds, freed or not yet (active `net_namespace` slab objects).
func kernelNamespaces() -> Int {
    for line in (try? FileSystem.readFile("/proc/slabinfo"))?.split(separator: "\n") ?? [] where line.hasPrefix("net_namespace ") {
        return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0
    }
    return 0
}
let baselineNamespaces = kernelNamespaces()

/// Waits (up to 30 s) until the kernel has freed the namespaces deleted so far: it does that in a
/// background workqueue, and one measurement must not pay for the previous one's cleanup.
func settle() {
    sync()
    let deadline = Date().addingTimeInterval(30)
    while kernelNamespaces() > baselineNamespaces + 10, Date() < deadline { usleep(50_000) }
}


// --- kemu ------------------------------------------------------------------------------------
struct Run { var create = 0.0, delete = 0.0, up = 0.0, memoryKB = 0.0, slabKB = 0.0 }

/// Creates then deletes `sandboxes` pod sandboxes with `workers` threads, each with its own
/// namespace thread and its own nodes (the way node agents work in parallel).
func kemuRun(workers: Int) throws -> Run {
    _ = try? ClusterNetwork.teardown(cluster: "benchk")
    var config = ClusterConfig()
    config.name = "benchk"
    config.nodes = (1...nodes).map { "node-\($0)" }
    var run = Run()
    let first = try ClusterNetwork(config: config)
    run.up = try seconds { try first.up() }
    let networks = try [first] + (1..<workers).map { _ in
        try ClusterNetwork.load(cluster: "benchk", backend: KernelBackend(thread: NamespaceThread()))
    }
    settle()
    let before = memory()
    func parallel(_ body: @escaping @Sendable (Int) throws -> Void) throws {
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            do { try body(w) } catch { failures.withLock { $0.append("\(error)") } }
        }
        if let failure = failures.withLock({ $0.first }) { throw KemuError(.system, failure) }
    }
    // Pod i goes to node i / podsPerNode; worker w takes the nodes w, w + workers, ...
    let plan: [[(String, String)]] = (0..<workers).map { w in
        (0..<sandboxes).filter { ($0 / podsPerNode) % workers == w }.map { ("p\($0)", "node-\($0 / podsPerNode + 1)") }
    }
    run.create = try seconds { try parallel { w in for (pod, node) in plan[w] { try networks[w].addPod(pod, node: node) } } }
    let after = memory()
    run.memoryKB = Double(after.used - before.used) / Double(sandboxes)
    run.slabKB = Double(after.slab - before.slab) / Double(sandboxes)
    run.delete = try seconds { try parallel { w in for (pod, _) in plan[w] { try networks[w].removePod(pod) } } }
    try ClusterNetwork.teardown(cluster: "benchk")
    settle()
    return run
}
let one = try kemuRun(workers: 1)
let two = try kemuRun(workers: 2)

// --- iproute2 --------------------------------------------------------------------------------
_ = try? sh(["bash", "\(root)/netns-scripts/down.sh", "benchs"])
let scriptUp = try seconds { try sh(["bash", "\(root)/netns-scripts/up.sh", "benchs", "1"]) }
let scriptCreate = try seconds {
    for i in 0..<scriptSandboxes {
        try sh(["bash", "\(root)/netns-scripts/pod.sh", "add", "benchs", "1", "s\(i)", "10.244.1.\(i + 2)"])
    }
}
let scriptDelete = try seconds {
    for i in 0..<scriptSandboxes { try sh(["bash", "\(root)/netns-scripts/pod.sh", "del", "benchs", "1", "s\(i)"]) }
}
try sh(["bash", "\(root)/netns-scripts/down.sh", "benchs"])

// --- report ----------------------------------------------------------------------------------
func f(_ format: String, _ value: Double) -> String { String(format: format, value) }
func rates(_ n: Int, _ create: Double, _ delete: Double) -> (create: Double, delete: Double, both: Double) {
    (Double(n) / create, Double(n) / delete, Double(n) / (create + delete))
}
let k1 = rates(sandboxes, one.create, one.delete), k2 = rates(sandboxes, two.create, two.delete)
let ip = rates(scriptSandboxes, scriptCreate, scriptDelete)
var release = utsname()
uname(&release)
let kernel = withUnsafePointer(to: &release.release) { $0.withMemoryRebound(to: CChar.self, capacity: 65) { String(cString: $0) } }
let table = """
## Pod sandboxes (\(ProcessInfo.processInfo.activeProcessorCount) cores, kernel \(kernel))

\(sandboxes) sandboxes on \(nodes) nodes for kemu (all alive before the first is deleted), \(scriptSandboxes) on 1 node
for iproute2 (netns-scripts/pod.sh: one `ip` command at a time). A sandbox is a namespace, a veth
into the node's cbr0, an address, lo up, a default route and /etc/netns/<ns>/resolv.conf.

| per second | kemu, 1 worker | kemu, 2 workers | iproute2 | kemu (1 worker) ÷ iproute2 |
|---|---|---|---|---|
| create | \(f("%.0f", k1.create)) | \(f("%.0f", k2.create)) | \(f("%.0f", ip.create)) | \(f("%.1f×", k1.create / ip.create)) |
| delete | \(f("%.0f", k1.delete)) | \(f("%.0f", k2.delete)) | \(f("%.0f", ip.delete)) | \(f("%.1f×", k1.delete / ip.delete)) |
| create + delete | **\(f("%.0f", k1.both))** | **\(f("%.0f", k2.both))** | \(f("%.0f", ip.both)) | \(f("%.1f×", k1.both / ip.both)) |

| other | kemu | iproute2 |
|---|---|---|
| memory per sandbox (MemTotal − MemAvailable / Slab) | \(f("%.0f", one.memoryKB)) KiB / \(f("%.0f", one.slabKB)) KiB | |
| cluster network up | \(f("%.0f", one.up * 1000)) ms (\(nodes) nodes) | \(f("%.0f", scriptUp * 1000)) ms (1 node) |

Target: ≥ 200 sandboxes/s created and deleted (iproute2 one command at a time: ~32/s).

"""
print(table)
try FileSystem.makeDirectories("\(root)/bench-results")
try FileSystem.writeFile("\(root)/bench-results/sandboxes.md", table)
