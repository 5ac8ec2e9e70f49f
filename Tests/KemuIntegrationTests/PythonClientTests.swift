import Foundation
import KemuTestSupport
import Testing

/// The official python `kubernetes` client (32.x, for Kubernetes 1.32), installed by `make deps`
/// into `.venv`, runs Tests/python/client_crud_watch.py against a real `kemu server`.
@Suite struct PythonClientTests {
    @Test func crudAndWatchThroughThePythonClient() throws {
        let python = "\(ServerProcess.root)/.venv/bin/python"
        guard FileManager.default.isExecutableFile(atPath: python) else {
            Issue.record("\(python) is missing: run `make deps`, which installs the python kubernetes client")
            return
        }
        let server = try ServerProcess()
        defer { server.stop() }
        let result = try server.run(python, ["\(ServerProcess.root)/Tests/python/client_crud_watch.py", server.kubeconfig])
        #expect(result.code == 0, "\(result.out)")
        #expect(result.out.contains("ok watch events = ['ADDED web-1 a', 'MODIFIED web-1 b', 'DELETED web-1 b']"), "\(result.out)")
        #expect(result.out.contains("ok stale replace status = 409"))
        #expect(result.out.contains("ok replicas after scale = 3"))
        #expect(result.out.hasSuffix("ok namespace gone = []\n"))
    }
}
