import Foundation
import Glibc
import KemuSystem

// What the benches read of the machine, and how they run a command.

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
