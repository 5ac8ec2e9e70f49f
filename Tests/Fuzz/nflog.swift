// libFuzzer target: nfnetlink_log datagrams as the node proxy's drop log reads them from the
// kernel (the packets in them are anyone's).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzNFLog(_ data: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = Array(UnsafeRawBufferPointer(start: data, count: count))
    for packet in NFLog.packets(in: bytes) { _ = packet.prefix.count + Int(packet.sourcePort) }
    return 0
}
