import Foundation
import Glibc
import KemuNetwork
import KemuSystem
import Synchronization

/// Pod sandboxes created and deleted per second and kernel memory per sandbox, kemu (libnl, in
/// process) against iproute2 (netns-scripts/pod.sh, one `ip` command at a time), in one run on
/// this machine. Prints a Markdown table and writes it to bench-results/.
enum SandboxBench {
    static let podsPerNode = 250

    struct Run { var create = 0.0, delete = 0.0, up = 0.0, memoryKB = 0.0, slabKB = 0.0 }

    static func run(root: String, sandboxes: Int, scriptSandboxes: Int) throws {
        let baseline = kernelNamespaces()
        let one = try kemuRun(workers: 1, sandboxes: sandboxes, baseline: baseline)
        let two = try kemuRun(workers: 2, sandboxes: sandboxes, baseline: baseline)
        let script = try scriptRun(root: root, sandboxes: scriptSandboxes)
        let table = report(sandboxes: sandboxes, scriptSandboxes: scriptSandboxes, one: one, two: two, script: script)
        print(table)
        try FileSystem.makeDirectories("\(root)/bench-results")
        try FileSystem.writeFile("\(root)/bench-results/sandboxes.md", table)
    }

    static func nodes(_ sandboxes: Int) -> Int { (sandboxes + podsPerNode - 1) / podsPerNode }

    /// Waits (up to 30 s) until the kernel has freed the namespaces deleted so far: it does that
    /// in a background workqueue, and one measurement must not pay for the previous one's cleanup.
    static func settle(baseline: Int) {
        sync()
        let deadline = Date().addingTimeInterval(30)
        while kernelNamespaces() > baseline + 10, Date() < deadline { usleep(50_000) }
    }

    /// Creates then deletes `sandboxes` pod sandboxes with `workers` threads, each with its own
    /// namespace thread and its own nodes (the way node agents work in parallel).
    static func kemuRun(workers: Int, sandboxes: Int, baseline: Int) throws -> Run {
        _ = try? ClusterNetwork.teardown(cluster: "benchk")
        var config = ClusterConfig()
        config.name = "benchk"
        config.nodes = (1...nodes(sandboxes)).map { "node-\($0)" }
        var run = Run()
        let first = try ClusterNetwork(config: config)
        defer { _ = try? ClusterNetwork.teardown(cluster: "benchk") }  // also after a failure midway
        run.up = try seconds { try first.up() }
        let networks = try [first] + (1..<workers).map { _ in
            try ClusterNetwork.load(cluster: "benchk", backend: KernelBackend(thread: NamespaceThread()))
        }
        settle(baseline: baseline)
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
        settle(baseline: baseline)
        return run
    }

    /// The same with iproute2, one `ip` command at a time: up, create, delete (seconds).
    static func scriptRun(root: String, sandboxes: Int) throws -> (up: Double, create: Double, delete: Double) {
        let scripts = "\(root)/netns-scripts"
        _ = try? sh(["bash", "\(scripts)/down.sh", "benchs"])
        defer { _ = try? sh(["bash", "\(scripts)/down.sh", "benchs"]) }
        let up = try seconds { try sh(["bash", "\(scripts)/up.sh", "benchs", "1"]) }
        let create = try seconds {
            for i in 0..<sandboxes { try sh(["bash", "\(scripts)/pod.sh", "add", "benchs", "1", "s\(i)", "10.244.1.\(i + 2)"]) }
        }
        let delete = try seconds {
            for i in 0..<sandboxes { try sh(["bash", "\(scripts)/pod.sh", "del", "benchs", "1", "s\(i)"]) }
        }
        return (up, create, delete)
    }

    static func report(sandboxes: Int, scriptSandboxes: Int, one: Run, two: Run, script: (up: Double, create: Double, delete: Double)) -> String {
        func f(_ format: String, _ value: Double) -> String { String(format: format, value) }
        func rates(_ n: Int, _ create: Double, _ delete: Double) -> (create: Double, delete: Double, both: Double) {
            (Double(n) / create, Double(n) / delete, Double(n) / (create + delete))
        }
        let k1 = rates(sandboxes, one.create, one.delete), k2 = rates(sandboxes, two.create, two.delete)
        let ip = rates(scriptSandboxes, script.create, script.delete)
        var release = utsname()
        uname(&release)
        let kernel = withUnsafePointer(to: &release.release) { $0.withMemoryRebound(to: CChar.self, capacity: 65) { String(cString: $0) } }
        return """
            ## Pod sandboxes (\(ProcessInfo.processInfo.activeProcessorCount) cores, kernel \(kernel))

            \(sandboxes) sandboxes on \(nodes(sandboxes)) nodes for kemu (all alive before the first is deleted), \(scriptSandboxes) on 1 node
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
            | cluster network up | \(f("%.0f", one.up * 1000)) ms (\(nodes(sandboxes)) nodes) | \(f("%.0f", script.up * 1000)) ms (1 node) |

            Target: ≥ 200 sandboxes/s created and deleted (iproute2 one command at a time: ~32/s).

            """
    }
}
