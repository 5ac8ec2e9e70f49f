import KemuSystem
import Testing

@Suite struct MachineBudgetTests {
    let machine = MachineBudget(cores: 2, memoryBytes: 24 << 30)

    @Test func nodesAreBoundedByCoresAndPodsByMemory() throws {
        #expect(machine.maxNodes == 200)
        #expect(machine.maxPods == 2304)  // 18 GiB of 24 at 8 MiB a pod
        try machine.check(nodes: 200)
        #expect(throws: KemuError.self) { try machine.check(nodes: 201) }
        do {
            try machine.check(nodes: 1000)
        } catch let error as KemuError {
            #expect(error.message.hasPrefix("nodes: 1000 nodes are more than this machine holds: at most 200"))
        }
    }

    @Test func eachNodeGetsItsShareNeverMoreThanConfigured() {
        #expect(machine.podsPerNode(configured: 110, nodes: 3) == 110)
        #expect(machine.podsPerNode(configured: 110, nodes: 100) == 23)
        #expect(machine.podsPerNode(configured: 110, nodes: 10_000) == 1)
        #expect(machine.replicasProblem(2304) == nil)
        #expect(machine.replicasProblem(100_000)?.hasPrefix("must be no more than 2304: this machine (2 cores, 24 GiB)") == true)
    }
}
