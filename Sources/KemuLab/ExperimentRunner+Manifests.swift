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

/// The manifests an experiment applies first, and commands run in a namespace.
extension ExperimentRunner {
    // MARK: manifests

    /// Creates or replaces every object of a YAML file, then waits until its Deployments are
    /// available (at most 120 s).
    func applyManifests(_ path: String) async throws {
        let documents: [Yams.Node]
        do {
            documents = try Yams.compose_all(yaml: try FileSystem.readFile(path)).map { $0 }
        } catch {
            throw KemuError(.invalidArgument, "apply \(path): not valid YAML: \(error)")
        }
        var deployments: [String] = []
        for document in documents {
            var object = Self.json(document)
            guard let apiVersion = object["apiVersion"]?.string, let kind = object["kind"]?.string,
                  let r = APIResources.all.first(where: { $0.groupVersion == apiVersion && $0.kind == kind }) else {
                throw KemuError(.invalidArgument, "apply \(path):\(document.mark?.line ?? 0): not an object kemu serves (apiVersion and kind)")
            }
            if r.namespaced && object.namespace.isEmpty { object.namespace = experiment.namespace }
            do {
                _ = try await client.create(r, object)
            } catch let error as ClientError where error.code == 409 {
                let current = try await client.get(r, namespace: r.namespaced ? object.namespace : nil, name: object.name)
                if r.kind == "Service" {
                    object["spec", default: [:]]["clusterIP"] = current[path: "spec.clusterIP"] ?? .null
                    object["spec", default: [:]]["clusterIPs"] = current[path: "spec.clusterIPs"] ?? .null
                }
                object.resourceVersion = current.resourceVersion
                _ = try await client.update(r, object)
            } catch let error as ClientError {
                throw KemuError(.invalidArgument, "apply \(path): \(kind) \(object.name): \(error.message)")
            }
            if kind == "Deployment" { deployments.append(object.name) }
        }
        let deadline = Date().addingTimeInterval(120)
        for name in deployments {
            while true {
                let d = try await client.get(APIResources.deployments, namespace: experiment.namespace, name: name)
                let want = d[path: "spec.replicas"]?.int ?? 1
                if d[path: "status.observedGeneration"]?.int == d[path: "metadata.generation"]?.int,
                   d[path: "status.updatedReplicas"]?.int == want, d[path: "status.availableReplicas"]?.int == want, d[path: "status.replicas"]?.int == want { break }
                guard Date() < deadline else { throw KemuError(.timeout, "apply \(path): deployment \(name) not available after 120 s") }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    /// A YAML node as JSON (scalars typed as YAML 1.2's core schema says).
    static func json(_ node: Yams.Node) -> JSON {
        switch node {
        case let .mapping(m):
            var o = JSONObject()
            for (k, v) in m { o[k.string ?? ""] = json(v) }
            return .object(o)
        case let .sequence(s):
            return .array(s.map(json))
        case .scalar:
            if node.null != nil, node.scalar?.style == .plain { return .null }
            if let b = node.bool, node.scalar?.style == .plain { return .bool(b) }
            if let i = node.int, node.scalar?.style == .plain { return .int(Int64(i)) }
            if let f = node.float, node.scalar?.style == .plain { return .double(f) }
            return .string(node.string ?? "")
        case .alias:
            return .null
        }
    }

    /// Runs a command in a namespace and returns what it printed (nil if it failed).
    func capture(_ argv: [String], in namespace: NetworkNamespace) -> String? {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { return nil }
        var options = Spawn.Options(namespace: namespace)
        options.stdout = fds[1]
        guard let pid = try? Spawn.spawn(argv, options) else { close(fds[0]); close(fds[1]); return nil }
        close(fds[1])
        let handle = FileHandle(fileDescriptor: fds[0], closeOnDealloc: true)
        let data = handle.readDataToEndOfFile()
        guard (try? Spawn.wait(pid)) == .exited(0) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }
}
