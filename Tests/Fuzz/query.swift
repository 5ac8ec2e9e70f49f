// libFuzzer target: query strings — percent decoding, whole-number parameters, dryRun, and the
// list parameters with their continue tokens.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzQuery(_ data: UnsafeRawPointer, _ count: Int) -> CInt {
    let text = String(decoding: UnsafeRawBufferPointer(start: data, count: count), as: UTF8.self)
    let query = Query(text)
    for key in ["timeoutSeconds", "tailLines", "limitBytes", "limit"] { _ = try? query.integer(key, in: 0...Int64.max) }
    _ = query.flag("watch")
    _ = try? query.dryRun()
    _ = try? ListPage(query)
    _ = ListPage.decode(text)
    return 0
}
