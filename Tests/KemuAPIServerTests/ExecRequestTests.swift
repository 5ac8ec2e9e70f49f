import Testing

@testable import KemuAPIServer

/// The exec/attach URL as kubectl writes it: each argument of the command form-encoded.
struct ExecRequestTests {
    @Test func argumentsKeepTheirPlusSignsAndSpaces() throws {
        let r = try #require(ExecRequest("/api/v1/namespaces/shop/pods/web-0/exec?command=python3&command=-c&command=x%20%2B%201&command=a+b&command=%C3%BC%26&container=c&stdin=true"))
        #expect(r.namespace == "shop" && r.pod == "web-0" && !r.attach && r.container == "c" && r.stdin && !r.tty)
        #expect(r.command == ["python3", "-c", "x + 1", "a b", "ü&"])
        #expect(ExecRequest("/api/v1/namespaces/shop/pods/web-0/logs?command=x") == nil)
    }
}
