import Foundation
import KemuAPI
import KemuControllers
import KemuStore
import KemuTestSupport
import Testing

extension KubectlTests {
    @Test func endpointSlicesAppearForAServiceThroughKubectl() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        try server.kubectl(["apply", "-f", "-"], stdin: podManifest(tier: "front"))
        try server.kubectl(["patch", "pod", "solo", "--subresource=status", "--type=merge",
                            "-p", #"{"status":{"podIP":"10.244.1.7","conditions":[{"type":"Ready","status":"True"}]}}"#])
        #expect(try server.kubectl(["expose", "pod", "solo", "--port", "80", "--target-port", "8080"]).code == 0)
        var out = ""
        let deadline = Date().addingTimeInterval(5)
        repeat {
            out = try server.kubectl(["get", "endpointslices", "-l", "kubernetes.io/service-name=solo"]).out
            if out.contains("10.244.1.7") { break }
            usleep(50_000)
        } while Date() < deadline
        #expect(out.contains("IPv4          8080    10.244.1.7"), "\(out)")
        #expect(try server.kubectl(["get", "endpoints", "solo"]).out.contains("solo   10.244.1.7:8080"))
        // The kubernetes Service leads to this API server.
        let api = try server.kubectl(["get", "endpoints", "kubernetes", "-o", "jsonpath={.subsets[0].addresses[0].ip}:{.subsets[0].ports[0].port}"]).out
        #expect(api == "127.0.0.1:\(server.port)")
        #expect(try server.kubectl(["get", "endpointslice", "kubernetes", "-o", "jsonpath={.endpoints[0].addresses[0]}"]).out == "127.0.0.1")
    }
}
