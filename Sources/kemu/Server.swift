import ArgumentParser
import Foundation
import KemuAPIServer
import KemuStore
import KemuSystem

struct Server: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the API server (store, Kubernetes API) alone, on loopback.",
        discussion: """
        Writes DATA-DIR/kubeconfig for kubectl:  kubectl --kubeconfig DATA-DIR/kubeconfig get ns
        TLS with client certificates is not built yet: for now the server needs --insecure and serves plain HTTP on 127.0.0.1 only.
        """)

    @Option(help: "Where the store keeps its data (created if missing).") var dataDir: String
    @Option(help: "Port on 127.0.0.1 (0 picks a free one).") var port = 6443
    @Flag(help: "Serve plain HTTP (loopback only).") var insecure = false

    func run() async throws {
        guard insecure else {
            throw ValidationError("TLS serving is not implemented yet: run with --insecure (plain HTTP on 127.0.0.1 only)")
        }
        let store: Store
        do {
            store = try Store(directory: dataDir)
        } catch {
            throw KemuError(.invalidState, "cannot open the store in \(dataDir)", cause: error)
        }
        let api = try APIServer(store: store)
        let dataDir = self.dataDir
        try await api.run(host: "127.0.0.1", port: port) { bound in
            let server = "http://127.0.0.1:\(bound)"
            do {
                try FileSystem.writeFile("\(dataDir)/kubeconfig", Kubeconfig.plain(server: server, cluster: "kemu"), mode: 0o600)
                FileHandle.standardOutput.write(Data("kemu API server on \(server) — kubectl --kubeconfig \(dataDir)/kubeconfig get namespaces\n".utf8))
            } catch {
                FileHandle.standardError.write(Data("kemu: cannot write \(dataDir)/kubeconfig: \(error)\n".utf8))
            }
        }
    }
}

enum Kubeconfig {
    static func plain(server: String, cluster: String) -> String {
        """
        apiVersion: v1
        kind: Config
        clusters:
        - name: \(cluster)
          cluster:
            server: \(server)
        users:
        - name: \(cluster)-admin
          user: {}
        contexts:
        - name: \(cluster)
          context:
            cluster: \(cluster)
            user: \(cluster)-admin
            namespace: default
        current-context: \(cluster)

        """
    }
}
