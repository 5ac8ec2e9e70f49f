// libFuzzer target: label and field selectors from ?labelSelector= and ?fieldSelector=.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSelectors(_ data: UnsafeRawPointer, _ count: Int) -> CInt {
    let text = String(decoding: UnsafeRawBufferPointer(start: data, count: count), as: UTF8.self)
    if let labels = try? LabelSelector(parsing: text) {
        _ = labels.matches(["app": "web", "tier": text])
        _ = try? LabelSelector(parsing: labels.description)
    }
    if let fields = try? FieldSelector(parsing: text) {
        _ = fields.matches(["metadata": ["name": "x", "namespace": "default"], "spec": ["nodeName": "n"]])
    }
    return 0
}
