// libFuzzer target: DNS messages as the cluster DNS reads them from any pod; what parses prints
// and parses again.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDNS(_ data: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = Array(UnsafeRawBufferPointer(start: data, count: count))
    guard let message = try? DNSMessage.parse(bytes) else { return 0 }
    _ = try? DNSMessage.parse(message.bytes())
    return 0
}
