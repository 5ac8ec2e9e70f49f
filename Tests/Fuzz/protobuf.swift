// libFuzzer target: kubectl's protobuf bodies (the k8s envelope and each kind's field table).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzProtobuf(_ data: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = Array(UnsafeRawBufferPointer(start: data, count: count))
    _ = try? Protobuf.decode(Protobuf.magic + bytes)
    _ = try? Protobuf.decode(bytes)
    return 0
}
