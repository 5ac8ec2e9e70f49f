import ArgumentParser
import Foundation
import KemuCluster
import KemuSystem

/// `kemu/echo`: the sample workload. An HTTP server that says who answered (pod, namespace, pod
/// IP, node, from the downward-API environment) and what it was asked, and a raw TCP port that
/// echoes bytes back. Flags make it slow to become ready or make it fail, to exercise probes.
struct Echo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The echo server kemu's sample pods run (image kemu/echo).",
        discussion: """
        GET any path: who answered and what was asked, as JSON (or plain text with ?format=text or \
        Accept: text/plain). /healthz answers 200 until --fail-after, then 500; /readyz answers 503 \
        until --ready-after, then 200. The TCP port echoes every byte back. With --journal FILE, \
        every start appends a line (pod name, start time) to FILE, relative to the working \
        directory (a StatefulSet pod's volume), and GET /journal shows the file: what a pod wrote \
        before it was deleted and came back.
        """)

    @Option(help: "HTTP port.") var port = 8080
    @Option(help: "Raw TCP echo port (0 to turn it off).") var tcpPort = 9000
    @Option(help: "Address to listen on.") var address = "0.0.0.0"
    @Option(help: "Seconds before /readyz answers 200.") var readyAfter: Double = 0
    @Option(help: "Seconds after which /healthz answers 500 (0: never).") var failAfter: Double = 0
    @Option(help: "Seconds after which the process exits with status 1 (0: never).") var exitAfter: Double = 0
    @Option(help: "Append a line to this file at every start; GET /journal shows it.") var journal: String?

    func validate() throws {
        for (name, value) in [("--port", port), ("--tcp-port", tcpPort)] where !(0...65535).contains(value) {
            throw ValidationError("\(name) \(value) is not a TCP port (0-65535)")
        }
        if port == 0 { throw ValidationError("--port must not be 0") }
        for (name, value) in [("--ready-after", readyAfter), ("--fail-after", failAfter), ("--exit-after", exitAfter)] where value < 0 {
            throw ValidationError("\(name) must not be negative")
        }
    }

    /// The server is `kemu-echo`, built beside this binary (what image kemu/echo runs): this
    /// command replaces itself with it, so both spellings are one program.
    func run() async throws {
        var arguments = ["--port", String(port), "--tcp-port", String(tcpPort), "--address", address,
                         "--ready-after", String(readyAfter), "--fail-after", String(failAfter), "--exit-after", String(exitAfter)]
        if let journal { arguments += ["--journal", journal] }
        let program = (Executable.path as NSString).deletingLastPathComponent + "/kemu-echo"
        let argv: [UnsafeMutablePointer<CChar>?] = ([program] + arguments).map { strdup($0) } + [nil]
        execv(program, argv)
        throw KemuError(.notFound, "\(program): \(String(cString: strerror(errno))) (build it: swift build --product kemu-echo)")
    }
}
