import KemuAPI
import Testing

@Suite struct SelectorTests {
    let labels = ["app": "web", "tier": "front", "env": "prod", "version": "7"]

    @Test func labelGrammar() throws {
        func matches(_ s: String) throws -> Bool { try LabelSelector(parsing: s).matches(labels) }
        #expect(try matches("app=web"))
        #expect(try matches("app==web,tier=front"))
        #expect(try !matches("app!=web"))
        #expect(try matches("env in (prod, staging)"))
        #expect(try !matches("env notin (prod)"))
        #expect(try matches("missing notin (x)"))
        #expect(try matches("tier"))
        #expect(try matches("!legacy"))
        #expect(try !matches("!app"))
        #expect(try matches("version>5,version<8"))
        #expect(try matches("") && LabelSelector(parsing: "").isEmpty)
        #expect(try matches("example.com/app!=x"))
        #expect(try LabelSelector(parsing: "a=b, c in (d,e),!f").description == "a=b,c in (d,e),!f")
    }

    @Test(arguments: ["a=b,", "a in (b", "a in b", "a b", "!", "bad key=1", "a=" + String(repeating: "x", count: 64), "a>b", "-a=1"])
    func badLabelSelectorsAreErrors(text: String) {
        #expect(throws: InputError.self) { try LabelSelector(parsing: text) }
    }

    @Test func emptyValuesAreAllowed() throws {
        #expect(try LabelSelector(parsing: "a=").matches(["a": ""]))
        #expect(try LabelSelector(parsing: "a==").matches(["a": ""]))
    }

    @Test func structuredSelectors() throws {
        let json = try JSON.parse(#"{"matchLabels":{"app":"web"},"matchExpressions":[{"key":"env","operator":"In","values":["prod"]},{"key":"legacy","operator":"DoesNotExist"}]}"#)
        let s = try LabelSelector(json: json)
        #expect(s.matches(labels))
        #expect(!s.matches(["app": "web", "env": "dev"]))
        #expect(try LabelSelector(json: nil).matches(labels) == false)
        #expect(try LabelSelector(json: [:]).matches(labels))
        #expect(LabelSelector(matchLabels: ["app": "web"]).matches(labels))
        let bad = #expect(throws: InputError.self) { try LabelSelector(json: try JSON.parse(#"{"matchExpressions":[{"key":"a","operator":"Maybe"}]}"#)) }
        #expect(bad?.message.contains("matchExpressions[0].operator") == true)
        #expect(throws: InputError.self) { try LabelSelector(json: try JSON.parse(#"{"matchExpressions":[{"key":"a","operator":"In"}]}"#)) }
    }

    @Test func fieldSelectorsAsKubectlSendsThem() throws {
        let pod = try JSON.parse(#"{"metadata":{"name":"web-1","namespace":"shop"},"spec":{"nodeName":"node-1"},"status":{"phase":"Running"}}"#)
        #expect(try FieldSelector(parsing: "metadata.name=web-1").matches(pod))
        #expect(try FieldSelector(parsing: "metadata.name=web-1").name == "web-1")
        #expect(try FieldSelector(parsing: "spec.nodeName=node-1,status.phase!=Succeeded,status.phase!=Failed").matches(pod))
        #expect(try !FieldSelector(parsing: "metadata.namespace==default").matches(pod))
        let event = try JSON.parse(#"{"involvedObject":{"name":"node-1","kind":"Node"}}"#)
        #expect(try FieldSelector(parsing: "involvedObject.name=node-1,involvedObject.namespace=").matches(event))
        #expect(try FieldSelector(parsing: #"metadata.name=a\,b"#).terms.first?.value == "a,b")
        #expect(try FieldSelector(parsing: "a=b!=c").terms.first?.value == "b!=c")
        #expect(throws: InputError.self) { try FieldSelector(parsing: "nonsense") }
        #expect(throws: InputError.self) { try FieldSelector(parsing: "=x") }
    }
}
