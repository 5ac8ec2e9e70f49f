import KemuAPI
import Testing

@Suite struct PatchTests {
    func j(_ s: String) -> JSON { try! JSON.parse(s) }

    @Test func mergePatchFollowsRFC7386() {
        let target = j(#"{"a":"b","c":{"d":"e","f":"g"},"list":[1,2]}"#)
        let patch = j(#"{"a":"z","c":{"f":null},"list":[3],"new":{"x":1}}"#)
        #expect(Patch.merge(target, patch) == j(#"{"a":"z","c":{"d":"e"},"list":[3],"new":{"x":1}}"#))
        #expect(Patch.merge(target, j("[1]")) == j("[1]"))
    }

    @Test func jsonPatchAsRolloutUndoSendsIt() throws {
        let deploy = j(#"{"metadata":{"annotations":{"a":"1"}},"spec":{"template":{"spec":{"containers":[{"name":"c","image":"v2"}]}}}}"#)
        let patch = j(#"[{"op":"replace","path":"/spec/template","value":{"spec":{"containers":[{"name":"c","image":"v1"}]}}},{"op":"replace","path":"/metadata/annotations","value":{"b":"2"}}]"#)
        let result = try Patch.jsonPatch(deploy, patch)
        #expect(result[path: "spec.template.spec.containers"]?.array?.first?["image"]?.string == "v1")
        #expect(result.annotations == ["b": "2"])
    }

    @Test func jsonPatchOperationsAndErrors() throws {
        let doc = j(#"{"a":[1,2],"b":{"c~d":1,"e/f":2}}"#)
        #expect(try Patch.jsonPatch(doc, j(#"[{"op":"add","path":"/a/1","value":9}]"#))["a"] == j("[1,9,2]"))
        #expect(try Patch.jsonPatch(doc, j(#"[{"op":"add","path":"/a/-","value":3}]"#))["a"] == j("[1,2,3]"))
        #expect(try Patch.jsonPatch(doc, j(#"[{"op":"remove","path":"/b/c~0d"}]"#))["b"] == j(#"{"e/f":2}"#))
        #expect(try Patch.jsonPatch(doc, j(#"[{"op":"move","from":"/b/e~1f","path":"/g"}]"#))["g"] == j("2"))
        #expect(try Patch.jsonPatch(doc, j(#"[{"op":"copy","from":"/a","path":"/h"},{"op":"test","path":"/h/0","value":1}]"#))["h"] == j("[1,2]"))
        #expect(throws: InputError.self) { try Patch.jsonPatch(doc, j(#"[{"op":"replace","path":"/zz","value":1}]"#)) }
        #expect(throws: InputError.self) { try Patch.jsonPatch(doc, j(#"[{"op":"test","path":"/a/0","value":5}]"#)) }
        #expect(throws: InputError.self) { try Patch.jsonPatch(doc, j(#"[{"op":"jump","path":"/a"}]"#)) }
        #expect(throws: InputError.self) { try Patch.jsonPatch(doc, j(#"{"op":"add"}"#)) }
    }

    @Test func strategicMergeAsKubectlApplySendsIt() throws {
        let live = j(#"{"metadata":{"labels":{"tier":"back","app":"web"}},"spec":{"template":{"spec":{"containers":[{"name":"a","image":"a:1","env":[{"name":"X","value":"1"}]},{"name":"b","image":"b:1"}]}}}}"#)
        let patch = j(#"{"metadata":{"labels":{"tier":null}},"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"a"}],"containers":[{"env":null,"name":"a"},{"$patch":"delete","name":"b"}]}}}}"#)
        let result = try Patch.strategicMerge(live, patch)
        #expect(result.labels == ["app": "web"])
        let containers = result[path: "spec.template.spec.containers"]?.array ?? []
        #expect(containers == [j(#"{"name":"a","image":"a:1"}"#)])
    }

    @Test func strategicMergeMergesKeyedListsAndReplacesOthers() throws {
        let live = j(#"{"containers":[{"name":"a","image":"a:1","ports":[{"containerPort":80,"protocol":"TCP"}],"args":["x","y"]}]}"#)
        let setImage = j(#"{"containers":[{"name":"a","image":"a:2","ports":[{"containerPort":81}],"args":["z"]},{"name":"c","image":"c:1"}]}"#)
        let result = try Patch.strategicMerge(live, setImage)
        let a = result["containers"]?.array?[0]
        #expect(a?["image"]?.string == "a:2")
        #expect(a?["ports"]?.array?.compactMap { $0["containerPort"]?.int } == [80, 81])
        #expect(a?["args"] == j(#"["z"]"#))
        #expect(result["containers"]?.array?.count == 2)
        let replaced = try Patch.strategicMerge(live, j(#"{"containers":[{"$patch":"replace"},{"name":"only","image":"o"}]}"#))
        #expect(replaced["containers"] == j(#"[{"name":"only","image":"o"}]"#))
        let order = try Patch.strategicMerge(j(#"{"env":[{"name":"A"},{"name":"B"}]}"#), j(#"{"$setElementOrder/env":[{"name":"B"},{"name":"A"}]}"#))
        #expect(order["env"] == j(#"[{"name":"B"},{"name":"A"}]"#))
        #expect(throws: InputError.self) { try Patch.strategicMerge(live, j(#"{"containers":[{"image":"no-name"}]}"#)) }
    }
}
