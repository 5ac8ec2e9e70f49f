import Foundation
import KemuLab
import KemuSystem
import Testing

/// The experiment file as users write it: the samples parse, and every mistake names its line.
@Suite struct ExperimentFileTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    func error(_ yaml: String) -> String {
        do {
            _ = try Experiment.parse(yaml, source: "x.yaml")
            return ""
        } catch {
            return "\(error)"
        }
    }

    @Test func everySampleParses() throws {
        let directory = "\(Self.root)/configs/experiments"
        let samples = FileSystem.list(directory).filter { $0.hasSuffix(".yaml") && $0 != "web.yaml" }
        #expect(samples.count >= 6)
        for sample in samples {
            let experiment = try Experiment.load(path: "\(directory)/\(sample)")
            #expect(!experiment.loads.isEmpty, "\(sample)")
            #expect(experiment.actions.allSatisfy { $0.at <= experiment.duration }, "\(sample)")
        }
    }

    @Test func loadsAndActionsAreReadAsWritten() throws {
        let e = try Experiment.parse("""
            name: t
            duration: 1500ms
            load:
              - {service: web, via: node-port, clients: 8, rate: 250, mode: keep-alive, timeout: 500ms}
              - {address: 10.96.0.20:80, from: app=client}
            actions:
              - {at: 1s, heal: node-2}
              - {at: 200ms, partition: node-2}
              - {at: 0s, scale: {deployment: web, replicas: 5}}
            """, source: "t.yaml")
        #expect(e.duration == 1.5)
        #expect(e.loads.count == 2)
        #expect(e.loads[0].via == "node-port" && e.loads[0].clients == 8 && e.loads[0].rate == 250 && e.loads[0].keepAlive && e.loads[0].timeout == 0.5)
        #expect(e.loads[1].address?.description == "10.96.0.20:80" && e.loads[1].from == "app=client" && e.loads[1].service.isEmpty)
        // Actions run in time order, whatever order the file lists them in.
        #expect(e.actions.map(\.verb) == [.scale, .partition, .heal])
        #expect(e.actions[0].settings["replicas"] == "5" && e.actions[0].target == "web")
        #expect(e.actions[1].line == 8)
    }

    @Test func mistakesNameTheirLine() {
        #expect(error("duration: 2s\nload: {service: web}\nactions:\n  - {at: 1s, partiton: node-2}\n")
                    .contains("x.yaml:4: unknown action \"partiton\" (did you mean partition?)"))
        #expect(error("duration: 2s\nload: {service: web}\nactions:\n  - {at: -1s, heal: node-2}\n").contains("x.yaml:4: at -1s: a time in the past"))
        #expect(error("duration: 2s\nload: {service: web}\nactions:\n  - {at: 3s, heal: node-2}\n").contains("after the experiment ends"))
        #expect(error("duration: 2s\nload: {service: web, rate: -1}\n").contains("x.yaml:2: rate"))
        #expect(error("duration: 2s\nload: {service: web, clients: 100000}\n").contains("clients: a number from 1 to 256"))
        #expect(error("duration: 2s\nload: {service: web, colour: red}\n").contains("unknown load field \"colour\""))
        #expect(error("duration: forever\nload: {service: web}\n").contains("duration: \"forever\""))
        #expect(error("duration: 2s\nload: {address: 10.0.0.1}\n").contains("is not IP:PORT"))
        #expect(error("duration: 2s\nload: {service: web}\nactions:\n  - {at: 1s, scale: web}\n").contains("scale: replicas"))
        #expect(error("duration: 2s\nload: {service: web}\nactions:\n  - {at: 1s, stop-node: {node: n, mode: melt}}\n").contains("mode \"melt\""))
        #expect(error("[1, 2").contains("not valid YAML"))
        #expect(error("").contains("empty experiment"))
    }

    @Test func theMeshVerbs() throws {
        let e = try Experiment.parse("""
            duration: 5s
            load: {service: web}
            actions:
              - {at: 1s, stop-mesh-ca: {}}
              - {at: 2s, rotate-certs: node-1}
              - {at: 3s, expire-certs: {node: node-2}}
              - {at: 4s, start-mesh-ca: }
            """, source: "x.yaml")
        #expect(e.actions.map(\.description) == ["stop-mesh-ca", "rotate-certs node-1", "expire-certs node-2", "start-mesh-ca"])
        #expect(error("duration: 2s\nload: {service: web}\nactions:\n  - {at: 1s, expire-certs: {}}\n") == "x.yaml:4: expire-certs: which node?")
        #expect(error("duration: 2s\nload: {service: web}\nactions:\n  - {at: 1s, stop-mesh-ca: {node: node-1}}\n") == "x.yaml:4: stop-mesh-ca: takes no settings")
        let more = try Experiment.parse("""
            duration: 5s
            load: {service: web}
            actions:
              - {at: 1s, revoke-certs: node-1}
              - {at: 2s, skew-clock: {node: node-2, by: 25h}}
              - {at: 3s, skew-clock: {node: node-2, by: "-90m"}}
            """, source: "x.yaml")
        #expect(more.actions.map(\.description) == ["revoke-certs node-1", "skew-clock node-2 by=25h", "skew-clock node-2 by=-90m"])
        #expect(error("duration: 2s\nload: {service: web}\nactions:\n  - {at: 1s, skew-clock: {node: node-1, by: soon}}\n")
                == "x.yaml:4: skew-clock: by \"soon\" is not a signed duration like 25h, -90m or 0")
        #expect(error("duration: 2s\nload: {service: web}\nactions:\n  - {at: 1s, skew-clock: {node: node-1}}\n")
                == "x.yaml:4: skew-clock: by \"\" is not a signed duration like 25h, -90m or 0")
        #expect(error("duration: 2s\nload: {service: web}\nactions:\n  - {at: 1s, revoke-certs: {}}\n") == "x.yaml:4: revoke-certs: which node?")
    }

    @Test func timesTakeUnits() {
        #expect(Experiment.seconds("2s") == 2)
        #expect(Experiment.seconds("1500ms") == 1.5)
        #expect(Experiment.seconds("1m") == 60)
        #expect(Experiment.seconds("0.25") == 0.25)
        #expect(Experiment.seconds("soon") == nil)
        #expect(Experiment.format(2) == "2s")
        #expect(Experiment.format(0.25) == "250ms")
    }
}
