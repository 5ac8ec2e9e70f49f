import Foundation
import KemuAPI
import KemuClient
import KemuIP
import KemuSystem

extension Chaos {
    /// Creates a Fault (the API validates it and refuses one that overlaps another); the
    /// Service must exist. Every node's proxy applies it within milliseconds.
    public func injectFault(_ fault: Fault) async throws {
        let services = APIResources.services
        let service: JSON
        do {
            service = try await cluster.client.get(services, namespace: fault.namespace, name: fault.service)
        } catch let error as ClientError where error.code == 404 {
            throw KemuError(.notFound, "service \(fault.namespace)/\(fault.service) does not exist")
        }
        do {
            _ = try await cluster.client.create(APIResources.faults, fault.object)
        } catch let error as ClientError {
            throw KemuError(.invalidArgument, "fault \(fault.name): \(error.message)")
        }
        await record(service, kind: "Service", type: "Warning", reason: "ChaosFaultInjected",
                     message: "Fault \(fault.name): \(fault.summary)" + (fault.sources.isEmpty ? "" : " for clients in \(fault.sources.joined(separator: ", "))"))
    }

    public func removeFault(_ name: String, namespace: String) async throws {
        let removed: JSON
        do {
            removed = try await cluster.client.get(APIResources.faults, namespace: namespace, name: name)
            _ = try await cluster.client.delete(APIResources.faults, namespace: namespace, name: name)
        } catch let error as ClientError where error.code == 404 {
            throw KemuError(.notFound, "fault \(namespace)/\(name) does not exist")
        }
        let fault = Fault(removed)
        var service: JSON = [:]
        service.name = fault.service
        service.namespace = namespace
        await record(service, kind: "Service", type: "Normal", reason: "ChaosFaultRemoved", message: "Fault \(name) removed (\(fault.summary))")
    }

    /// A `--source`: a CIDR, an address, or a pod or host whose address is meant.
    public func sourceRange(_ text: String, namespace: String) async throws -> String {
        if IPv4Network(text) != nil { return text }
        if IPv4Address(text) != nil { return "\(text)/32" }
        let plan = cluster.plan
        let hosts = ["client": plan.clientIP, "lb": plan.loadBalancerIP, "cp": plan.controlPlaneIP]
        if let ip = hosts[text] { return "\(ip)/32" }
        if let index = network.nodes.first(where: { $0.name == text })?.index { return "\(plan.nodeIP(index))/32" }
        do {
            let pod = try await cluster.pod(text, namespace: namespace)
            guard let ip = pod[path: "status.podIP"]?.string else { throw KemuError(.invalidState, "--source \(text): the pod has no address yet") }
            return "\(ip)/32"
        } catch let error as KemuError where error.code == .notFound {
            throw KemuError(.notFound, "--source \(text): not a CIDR, an address, a host (client, lb, cp, a node) or a pod in \(namespace)")
        }
    }
}
