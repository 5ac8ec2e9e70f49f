import HTTPTypes
import Hummingbird
import KemuAPI
import KemuPKI

/// The questions clients ask about rights, answered at once and never stored:
/// SelfSubjectAccessReview (`kubectl auth can-i VERB RESOURCE`), SelfSubjectRulesReview
/// (`kubectl auth can-i --list`), SubjectAccessReview and LocalSubjectAccessReview (another
/// user's rights, for those allowed to create them), and SelfSubjectReview (`kubectl auth whoami`).
extension APIServer {
    /// Without authentication (`--insecure`) every caller may do everything, and says so.
    static let anonymous = Identity(user: "system:anonymous", groups: ["system:unauthenticated"])

    func review(_ t: Target, _ request: Request) async throws -> Response {
        guard request.method == .post, t.name == nil, t.subresource == nil else {
            throw APIError.methodNotAllowed("\(t.resource.kind) is only created (POST to the collection), never stored")
        }
        var review = try await incoming(t, request)
        review["metadata"] = ["creationTimestamp": .null]
        switch t.resource.kind {
        case "SelfSubjectReview":
            let who = t.user ?? Self.anonymous
            var info: JSON = ["username": .string(who.user)]
            let groups = t.user == nil ? who.groups : who.groups + (who.groups.contains("system:authenticated") ? [] : ["system:authenticated"])
            info["groups"] = .array(groups.map { .string($0) })
            review["status"] = ["userInfo": info]
        case "SelfSubjectRulesReview":
            review["status"] = rulesStatus(t.user, namespace: review[path: "spec.namespace"]?.string ?? "")
        case "SelfSubjectAccessReview":
            review["status"] = try accessStatus(t.user, review, t)
        default:  // SubjectAccessReview, LocalSubjectAccessReview: about the user the spec names.
            guard let name = review[path: "spec.user"]?.string, !name.isEmpty || review[path: "spec.groups"]?.array?.isEmpty == false else {
                throw APIError.invalid(t.resource, name: "", [.invalid("spec.user", "\"\"", "at least one of user or group must be specified")])
            }
            let groups = (review[path: "spec.groups"]?.array ?? []).compactMap(\.string)
            if t.resource.namespaced, let asked = review[path: "spec.resourceAttributes.namespace"]?.string, !asked.isEmpty, asked != t.namespace {
                throw APIError.invalid(t.resource, name: "", [.invalid("spec.resourceAttributes.namespace", "\"\(asked)\"",
                                                                         "must match metadata.namespace \"\(t.namespace ?? "")\"")])
            }
            review["status"] = try accessStatus(Identity(user: name, groups: groups), review, t)
        }
        return Self.json(review, status: .created)
    }

    /// `{allowed, reason}` for the one question the spec asks.
    func accessStatus(_ user: Identity?, _ review: JSON, _ t: Target) throws -> JSON {
        let resource = review[path: "spec.resourceAttributes"]?.object
        let nonResource = review[path: "spec.nonResourceAttributes"]?.object
        guard (resource == nil) != (nonResource == nil) else {
            throw APIError.invalid(t.resource, name: "", [.invalid("spec.resourceAttributes", "null",
                                                                    "exactly one of nonResourceAttributes or resourceAttributes must be specified")])
        }
        let field = { (key: String) in review[path: "spec.\(resource != nil ? "resourceAttributes" : "nonResourceAttributes").\(key)"]?.string ?? "" }
        var asked: RequestAttributes
        if resource != nil {
            asked = RequestAttributes(verb: field("verb"), group: field("group"), resource: field("resource"),
                                      subresource: field("subresource"), namespace: field("namespace"), name: field("name"))
            if t.resource.namespaced { asked.namespace = t.namespace ?? "" }
        } else {
            asked = RequestAttributes(verb: field("verb"), path: field("path"))
        }
        guard let user else { return ["allowed": true, "reason": "the server authorizes every request (--insecure)"] }
        let decision = authorizer.authorize(user, asked)
        var status: JSON = ["allowed": .bool(decision.allowed)]
        if !decision.reason.isEmpty { status["reason"] = .string(decision.reason) }
        return status
    }

    /// Every rule that applies to the caller in `namespace`, as RBAC holds them.
    func rulesStatus(_ user: Identity?, namespace: String) -> JSON {
        guard let user else {
            return ["resourceRules": [["verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]]],
                    "nonResourceRules": [["verbs": ["*"], "nonResourceURLs": ["*"]]], "incomplete": false]
        }
        let rules = authorizer.grants(user, namespace: namespace).flatMap(\.rules)
        var status: JSON = [
            "resourceRules": .array(rules.filter { $0.nonResourceURLs.isEmpty }.map(\.json)),
            "nonResourceRules": .array(rules.filter { !$0.nonResourceURLs.isEmpty }.map { ["verbs": $0.json["verbs"] ?? [], "nonResourceURLs": $0.json["nonResourceURLs"] ?? []] }),
            "incomplete": false,
        ]
        if NodeAuthorizer.node(of: user) != nil {
            status["incomplete"] = true
            status["evaluationError"] = "the node authorizer's rights (its own Node, its pods' status) are not listed"
        }
        return status
    }
}
