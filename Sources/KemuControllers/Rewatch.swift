import Logging

/// Runs `follow` until the task is cancelled, starting it again whenever it ends or fails: a
/// controller's watch that ends (410 after falling behind) is replaced by a new one, which
/// replays the current state, so a controller never stops by itself.
func rewatching(_ logger: Logger, _ follow: () async throws -> Void) async throws {
    while !Task.isCancelled {
        do {
            try await follow()
        } catch is CancellationError {
            return
        } catch {
            logger.warning("watch ended (\(error)); starting again")
        }
        try await Task.sleep(for: .milliseconds(100))
    }
}
