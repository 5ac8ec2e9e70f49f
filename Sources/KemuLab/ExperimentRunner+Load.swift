import Foundation
import Glibc
import KemuAgent
import KemuCluster
import KemuAPI
import KemuClient
import KemuIP
import KemuNetwork
import KemuSystem
import Synchronization
import Yams

/// Where each load comes from and goes, and its generator's lines as they arrive.
extension ExperimentRunner {
    // MARK: load

    /// Where a load's requests go and where they come from.
    func resolve(_ load: Experiment.Load) async throws -> Target {
        let ns = experiment.namespace
        let fail = { (message: String) in KemuError(.invalidArgument, "\(self.experiment.source):\(load.line): \(message)") }
        if let address = load.address {
            return Target(load: load, address: address, namespace: try await source(load, fail), service: "")
        }
        let service: JSON
        do {
            service = try await client.get(APIResources.services, namespace: ns, name: load.service)
        } catch let error as ClientError where error.code == 404 {
            throw fail("load \(load.name): service \(ns)/\(load.service) does not exist")
        }
        let ports = service[path: "spec.ports"]?.array ?? []
        guard let port = load.port.map({ p in ports.first { $0["port"]?.int == Int64(p) } }) ?? ports.first, let servicePort = port["port"]?.int else {
            throw fail("load \(load.name): service \(load.service) has no port \(load.port.map(String.init) ?? "")")
        }
        let plan = chaos.network.plan
        let address: SocketAddress?
        switch load.via {
        case "node-port":
            guard let nodePort = port["nodePort"]?.int, let first = chaos.network.nodes.first else {
                throw fail("load \(load.name): service \(load.service) has no NodePort (type \(service[path: "spec.type"]?.string ?? "ClusterIP"))")
            }
            address = SocketAddress(plan.nodeIP(first.index), UInt16(nodePort))
        case "load-balancer":
            guard let ip = service[path: "status.loadBalancer.ingress"]?.array?.first?["ip"]?.string else {
                throw fail("load \(load.name): service \(load.service) has no load-balancer address (type LoadBalancer, and the pool not exhausted?)")
            }
            address = IPv4Address(ip).map { SocketAddress($0, UInt16(servicePort)) }
        default:
            address = service[path: "spec.clusterIP"]?.string.flatMap(IPv4Address.init).map { SocketAddress($0, UInt16(servicePort)) }
        }
        guard let address else { throw fail("load \(load.name): service \(load.service) has no address to reach via \(load.via)") }
        return Target(load: load, address: address, namespace: try await source(load, fail), service: load.service)
    }

    /// The namespace a load runs in: a host, a pod, or the first ready pod a label selector picks.
    private func source(_ load: Experiment.Load, _ fail: (String) -> KemuError) async throws -> NetworkNamespace {
        let from = load.from
        if from.contains("=") {
            let pods = try await client.list(APIResources.pods, namespace: experiment.namespace, labels: from).items
            guard let pod = pods.first(where: { $0[path: "status.phase"]?.string == "Running" && $0[path: "status.podIP"] != nil }) else {
                throw fail("load \(load.name): no running pod matches from: \(from)")
            }
            return try await chaos.cluster.namespace(of: pod.name, kubernetesNamespace: experiment.namespace)
        }
        do {
            return try await chaos.cluster.namespace(of: from, kubernetesNamespace: experiment.namespace)
        } catch {
            throw fail("load \(load.name): from: \(from) is not a host (client, a node), a pod or a label selector: \(error)")
        }
    }

    /// Starts `kemu loadgen` inside the load's namespace; its lines are collected as they come.
    func startLoad(_ t: Target) throws -> LoadOutput {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw KemuError(.system, "pipe: \(String(cString: strerror(errno)))") }
        var options = Spawn.Options(namespace: t.namespace)
        options.stdout = fds[1]
        let argv = [Executable.path, "loadgen", "--target", "\(t.address)", "--clients", String(t.load.clients), "--rate", String(t.load.rate),
                    "--duration", String(experiment.duration), "--timeout", String(t.load.timeout)] + (t.load.keepAlive ? ["--keep-alive"] : [])
        let pid: pid_t
        do { pid = try Spawn.spawn(argv, options) } catch { close(fds[0]); close(fds[1]); throw error }
        close(fds[1])
        children.append(pid)
        return LoadOutput(fd: fds[0], pid: pid)
    }

}

/// A load generator's lines as they arrive, read on a thread of their own.
final class LoadOutput: @unchecked Sendable {
    let pid: pid_t
    private let lines = Mutex<[ExperimentReport.Request]>([])
    private let done = DispatchSemaphore(value: 0)

    init(fd: Int32, pid: pid_t) {
        self.pid = pid
        startThread(named: "kemu-load-reader") { [self] in
            let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
            var pending = ""
            while true {
                let data = handle.availableData
                if data.isEmpty { break }
                pending += String(decoding: data, as: UTF8.self)
                var parsed: [ExperimentReport.Request] = []
                while let newline = pending.firstIndex(of: "\n") {
                    if let r = LoadResult(line: pending[..<newline]) { parsed.append(r) }
                    pending = String(pending[pending.index(after: newline)...])
                }
                lines.withLock { $0 += parsed }
            }
            done.signal()
        }
    }

    /// Waits for the generator to end and returns every request it made.
    func finish() -> [ExperimentReport.Request] {
        done.wait()
        _ = try? Spawn.wait(pid)
        return lines.withLock { $0 }
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for e in self { result.append(try await transform(e)) }
        return result
    }
}
