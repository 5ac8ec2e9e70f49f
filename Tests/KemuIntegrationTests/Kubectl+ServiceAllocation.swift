import Foundation
import KemuAPI
import KemuIP
import KemuStore
@testable import KemuAPIServer
import KemuTestSupport
import Testing

extension KubectlTests {
    @Test func servicesGetClusterIPsNodePortsAndLoadBalancerIPs() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let kubernetes = try server.kubectl(["get", "svc", "kubernetes"]).out
        #expect(kubernetes.contains("kubernetes   ClusterIP   10.96.0.1    <none>        443/TCP"))
        try server.kubectl(["create", "-f", "-"], stdin: replicaSet)
        #expect(try server.kubectl(["expose", "rs", "web", "--port", "80", "--type", "NodePort"]).code == 0)
        let ip = try server.kubectl(["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]).out
        #expect(IPv4Network("10.96.0.0/16")!.contains(IPv4Address(ip) ?? IPv4Address(0)))
        let nodePort = Int(try server.kubectl(["get", "svc", "web", "-o", "jsonpath={.spec.ports[0].nodePort}"]).out) ?? 0
        #expect((30000...32767).contains(nodePort))
        // A label change keeps the allocations; a clusterIP change is refused.
        #expect(try server.kubectl(["label", "svc", "web", "x=y"]).code == 0)
        #expect(try server.kubectl(["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]).out == ip)
        let change = try server.kubectl(["patch", "svc", "web", "--type=merge", "-p", #"{"spec":{"clusterIP":"10.96.9.9"}}"#])
        #expect(change.code == 1 && change.out.contains("may not change once set"))

        let taken = """
        apiVersion: v1
        kind: Service
        metadata: {name: clash}
        spec: {type: NodePort, selector: {app: web}, ports: [{port: 80, nodePort: \(nodePort)}]}
        """
        let clash = try server.kubectl(["create", "-f", "-"], stdin: taken)
        #expect(clash.code == 1 && clash.out.contains("spec.ports[0].nodePort: Invalid value: \(nodePort): provided port is already allocated"))

        #expect(try server.kubectl(["expose", "rs", "web", "--name", "front", "--port", "80", "--type", "LoadBalancer"]).code == 0)
        let lb = try server.kubectl(["get", "svc", "front", "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}"]).out
        #expect(lb.hasPrefix("172.31.1."))
        #expect(try server.kubectl(["get", "svc", "front"]).out.contains(lb))

        // After a crash the allocator is rebuilt from the store: nothing is handed out twice.
        server.crash()
        try server.start()
        let again = try server.kubectl(["create", "-f", "-"], stdin: taken)
        #expect(again.code == 1 && again.out.contains("provided port is already allocated"))
        // Deleting frees the port for the next Service.
        #expect(try server.kubectl(["delete", "svc", "web"]).code == 0)
        #expect(try server.kubectl(["create", "-f", "-"], stdin: taken).out == "service/clash created\n")
    }
}
