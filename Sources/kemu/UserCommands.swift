import ArgumentParser
import KemuCluster

struct UserCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "user", abstract: "Credentials for more identities, to try RBAC as a teammate would.",
        subcommands: [UserAdd.self])
}

struct UserAdd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add", abstract: "Mint a client certificate and a kubeconfig for another user of the cluster.",
        discussion: """
        The user starts with no rights but discovery and `kubectl auth can-i`/`whoami`; grant more with RBAC, e.g.
          kemu user add alice --group dev
          kubectl create rolebinding dev-view --clusterrole=view --group=dev -n default
          KUBECONFIG=/run/kemu/kemu/users/alice.kubeconfig kubectl auth whoami
        """)

    @OptionGroup var options: ClusterOptions
    @Option(name: .long, help: "A group the user belongs to (the certificate's organization). Repeatable.") var group: [String] = []
    @Argument(help: "The user name (the certificate's common name).") var name: String

    func run() throws {
        try requireRoot("kemu user add")
        let path = try UserCredentials.add(cluster: try options.clusterName(), user: name, groups: group)
        print(path)
    }
}
