// libFuzzer target: merge, strategic-merge and JSON patches. The input is an object and a patch,
// split at the first zero byte; each patch kind is applied to the object.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPatch(_ data: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = Array(UnsafeRawBufferPointer(start: data, count: count))
    let parts = bytes.split(separator: 0, maxSplits: 1, omittingEmptySubsequences: false)
    guard parts.count == 2, let target = try? JSON.parse(Array(parts[0])), let patch = try? JSON.parse(Array(parts[1])) else { return 0 }
    _ = Patch.merge(target, patch)
    _ = try? Patch.strategicMerge(target, patch)
    _ = try? Patch.jsonPatch(target, patch)
    return 0
}
