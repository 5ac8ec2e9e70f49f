import ArgumentParser
import Glibc
import KemuLab
import KemuSystem
import Synchronization

/// `kemu loadgen`: the experiments' load generator (KemuLab's LoadGenerator), a line per request
/// on stdout: `INTENDED SENT ok POD CORRECTED_MS RAW_MS`, or `fail KIND` in place of `ok POD`.
struct LoadGen: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loadgen", abstract: "HTTP load for experiments: a line per request on stdout.", shouldDisplay: false)

    @Option(help: "IP:PORT.") var target: String
    @Option(help: "Concurrent clients.") var clients = 4
    @Option(help: "Requests per second in all, on a fixed schedule (0: each client as fast as it can).") var rate = 100.0
    @Option(help: "Seconds to run.") var duration = 10.0
    @Option(help: "Seconds a request may take.") var timeout = 2.0
    @Flag(help: "Keep each client's connection open across requests.") var keepAlive = false
    @Option(help: "Request path.") var path = "/?format=text"

    func run() throws {
        guard let address = SocketAddress(target) else { throw ValidationError("--target: \(target) is not IP:PORT") }
        var settings = LoadGenerator.Settings(target: address)
        (settings.clients, settings.rate, settings.duration, settings.timeout) = (clients, rate, duration, timeout)
        (settings.keepAlive, settings.path) = (keepAlive, path)
        if let problem = settings.problem { throw ValidationError("--" + problem) }
        let out = Mutex(())
        LoadGenerator(settings).run { result in
            let line = result.line
            out.withLock { _ in _ = line.withCString { write(1, $0, strlen($0)) } }
        }
    }
}
