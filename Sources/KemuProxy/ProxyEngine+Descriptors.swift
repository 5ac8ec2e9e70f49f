import Glibc
import KemuSystem

/// The engine's descriptors: connections by descriptor, closes deferred to the end of a batch,
/// splice pipes kept for reuse.
extension ProxyEngine {
    /// Descriptors are closed after the current batch of events, never during it: a number
    /// closed mid-batch could be reused by an accept or connect in the same batch, and an event
    /// fetched for the old socket would then be applied to the new one.
    func closeLater(_ fd: Int32, reset: Bool) {
        if reset { TCPSocket.setResetOnClose(fd) }
        closing.append(fd)
    }

    func closeDeferred() {
        for fd in closing { close(fd) }
        closing.removeAll(keepingCapacity: true)
    }

    func takePipe() throws -> SplicePipe {
        if let pipe = sparePipes.popLast() { return pipe }
        return try SplicePipe(size: settings.pipeBytes)
    }

    /// A pipe that may still hold bytes (a reset connection's) is closed, not reused.
    func givePipe(_ pipe: SplicePipe, empty: Bool) {
        if empty && sparePipes.count < 1024 { sparePipes.append(pipe) } else { pipe.close() }
    }

    @inline(__always)
    func connection(_ fd: Int32) -> Connection? {
        fd >= 0 && Int(fd) < connections.count ? connections[Int(fd)] : nil
    }

    func store(_ c: Connection, at fd: Int32) {
        let i = Int(fd)
        if i >= connections.count { connections.append(contentsOf: repeatElement(nil, count: max(i + 1 - connections.count, connections.count))) }
        if fd == c.client { openConnections += 1 }
        connections[i] = c
    }

    func forget(_ fd: Int32) {
        guard let c = connection(fd) else { return }
        if fd == c.client { openConnections -= 1 }
        connections[Int(fd)] = nil
    }
}
