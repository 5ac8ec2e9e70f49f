// libFuzzer target: the JSON parser and printer every body goes through. A body that parses
// prints to text that parses to the same value; nothing traps.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJSON(_ data: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = Array(UnsafeRawBufferPointer(start: data, count: count))
    guard let value = try? JSON.parse(bytes) else { return 0 }
    guard let again = try? JSON.parse(value.bytes()) else { fatalError("printed JSON does not parse: \(value.text().prefix(200))") }
    precondition(again == value, "a round trip changed the value")
    return 0
}
