import ArgumentParser
import KemuAPI
import KemuLab
import KemuSystem

struct ExperimentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "experiment", abstract: "Scripted failover experiments: load, a timeline of chaos, and a report.",
        subcommands: [ExperimentRunCommand.self])
}

struct ExperimentRunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Run an experiment file and report what the clients saw and how fast the cluster adapted.",
        discussion: """
        Samples: configs/experiments/. The report is printed, and saved in --output as report.json and timeline.svg \
        (timeline.png too when rsvg-convert is installed). Whatever the experiment broke (partitions, stopped nodes or \
        proxies, faults) is undone when it ends, also when it fails or is interrupted.
        """)

    @OptionGroup var options: ClusterOptions
    @Option(help: "Directory for report.json and timeline.svg (default: experiment-results/NAME).") var output: String?
    @Flag(help: "Only check the file.") var check = false
    @Argument(help: "The experiment file.") var file: String

    func run() async throws {
        let experiment = try Experiment.load(path: file)
        if check {
            print("\(file): experiment \(experiment.name), \(experiment.loads.count) loads, \(experiment.actions.count) actions over \(Experiment.format(experiment.duration)): ok")
            return
        }
        let runner = ExperimentRunner(experiment, chaos: try Chaos(cluster: try options.clusterName(), for: "kemu experiment run"))
        let report = try await runner.run()
        print(report.table())
        let directory = output ?? "experiment-results/\(experiment.name)"
        try FileSystem.makeDirectories(directory)
        try FileSystem.writeFile("\(directory)/report.json", report.json().text() + "\n")
        try FileSystem.writeFile("\(directory)/timeline.svg", report.svg())
        var saved = ["\(directory)/report.json", "\(directory)/timeline.svg"]
        if let png = TimelinePicture.convert("\(directory)/timeline.svg") { saved.append(png) }
        print("saved: \(saved.joined(separator: ", "))")
    }
}
