import CNftables
import KemuSystem
import Synchronization

/// nftables in the calling process's network namespace, through libnftables: a script in nft's
/// own language (what `nft -f FILE` reads) is applied as one transaction — all of it or none —
/// so a ruleset is replaced without a moment where half of it holds. libnftables is nft's own
/// library: its parser and its netlink encoding are the ones the `nft` command uses, so a script
/// here reads the same as one typed by hand, and `nft list ruleset` shows what kemu made.
///
/// One context, used under a lock (a context is not thread-safe). Its netlink socket belongs to
/// the namespace the process is in when it is made: make it inside the node's namespace.
public final class NFTables: Sendable {
    private let context: Mutex<Context>

    /// `nft_ctx` is a C pointer; it moves between threads only under the mutex.
    private struct Context: @unchecked Sendable { let pointer: OpaquePointer }

    public init() throws {
        guard let ctx = nft_ctx_new(UInt32(NFT_CTX_DEFAULT)) else {
            throw KemuError(.system, "nftables: cannot make a libnftables context")
        }
        _ = nft_ctx_buffer_output(ctx)
        _ = nft_ctx_buffer_error(ctx)
        context = Mutex(Context(pointer: ctx))
    }

    deinit { context.withLock { nft_ctx_free($0.pointer) } }

    /// Applies `script` as one transaction; returns what nft printed (for `list` commands).
    /// Throws with nft's own message (which names the line at fault) when any of it is refused.
    @discardableResult
    public func run(_ script: String) throws -> String {
        try context.withLock { ctx in
            let status = nft_run_cmd_from_buffer(ctx.pointer, script)
            let output = nft_ctx_get_output_buffer(ctx.pointer).map { String(cString: $0) } ?? ""
            let errors = nft_ctx_get_error_buffer(ctx.pointer).map { String(cString: $0) } ?? ""
            if status != 0 {
                let reason = errors.trimmingTrailingWhitespace
                throw KemuError(.system, "nftables refused the ruleset: \(reason.isEmpty ? "status \(status)" : reason)")
            }
            return output
        }
    }
}

extension String {
    var trimmingTrailingWhitespace: String {
        var s = Substring(self)
        while let last = s.last, last.isWhitespace { s = s.dropLast() }
        return String(s)
    }
}
