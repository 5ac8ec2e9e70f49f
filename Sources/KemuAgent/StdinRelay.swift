import Foundation
import Glibc
import KemuSystem
import Synchronization

/// A container's stdin (`stdin: true` in its spec): a pipe into the process, fed by whoever
/// connects to the socket `<pod log directory>/<container>.stdin` — the API server's attach
/// (`kubectl attach`, `kubectl run -i`). One connection at a time; with `stdinOnce` the pipe
/// closes (the process reads end of file) when the first connection ends, as kubelet does.
/// The serving thread owns the listener and the pipe's write end once it runs, so no descriptor
/// is used after its close.
final class StdinRelay: Sendable {
    let path: String
    /// The process's end of the pipe: give it to the spawn, then `startServing`.
    let readEnd: Int32
    private let writeEnd: Int32
    private let listener: Int32
    private let once: Bool
    private let state = Mutex((closed: false, serving: false))

    static func socketPath(logDirectory: String, container: String) -> String { "\(logDirectory)/\(container).stdin" }

    init(path: String, once: Bool) throws {
        signal(SIGPIPE, SIG_IGN)  // the process may be gone when bytes for it arrive
        let pipe = try UnixSocket.pipe(for: "stdin of \(path)")
        do {
            listener = try UnixSocket.listen(path: path)
        } catch {
            Glibc.close(pipe.read)
            Glibc.close(pipe.write)
            throw error
        }
        (readEnd, writeEnd, self.path, self.once) = (pipe.read, pipe.write, path, once)
    }

    /// A relay into a terminal the process already has (`tty: true`): what connects writes to
    /// the terminal's primary end (`writeEnd`, owned by the relay from now on).
    init(path: String, once: Bool, terminal writeEnd: Int32) throws {
        signal(SIGPIPE, SIG_IGN)
        do {
            listener = try UnixSocket.listen(path: path)
        } catch {
            Glibc.close(writeEnd)
            throw error
        }
        (readEnd, self.writeEnd, self.path, self.once) = (-1, writeEnd, path, once)
    }

    /// Serves connections on a thread of its own until closed; the read end is closed here (the
    /// process has its copy).
    func startServing() {
        if readEnd >= 0 { Glibc.close(readEnd) }
        state.withLock { $0.serving = true }
        let (listener, writeEnd, once) = (self.listener, self.writeEnd, self.once)
        startThread(named: "kemu-stdin") { [self] in
            var buffer = [UInt8](repeating: 0, count: 32 << 10)
            while true {
                let connection = accept(listener, nil, nil)
                if connection < 0 {
                    if errno == EINTR { continue }
                    break
                }
                copying: while true {
                    let n = buffer.withUnsafeMutableBytes { read(connection, $0.baseAddress, $0.count) }
                    if n <= 0 { break }
                    var offset = 0
                    while offset < n {
                        let w = buffer[offset..<n].withUnsafeBytes { write(writeEnd, $0.baseAddress, $0.count) }
                        if w <= 0 { break copying }
                        offset += w
                    }
                }
                Glibc.close(connection)
                if once || state.withLock({ $0.closed }) { break }
            }
            close()
            Glibc.close(listener)
            Glibc.close(writeEnd)
        }
    }

    /// The container ended (or its one attach did): no more connections, the socket goes. A
    /// relay that never served closes its descriptors here.
    func close() {
        state.withLock { s in
            guard !s.closed else { return }
            s.closed = true
            unlink(path)
            _ = shutdown(listener, Int32(SHUT_RDWR))
            if !s.serving {
                Glibc.close(listener)
                Glibc.close(writeEnd)
                if readEnd >= 0 { Glibc.close(readEnd) }
            }
        }
    }
}
