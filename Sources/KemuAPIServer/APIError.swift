import KemuAPI
import KemuStore

/// An error answered as a Kubernetes `Status` object (kubectl prints
/// `Error from server (<reason>): <message>`).
public struct APIError: Error, CustomStringConvertible, Sendable {
    public struct Cause: Sendable {
        public var reason: String
        public var message: String
        public var field: String
    }

    public var code: Int
    public var reason: String
    public var message: String
    public var name: String? = nil
    public var kind: String? = nil
    public var group: String? = nil
    public var causes: [Cause] = []

    public var description: String { message }

    public static func badRequest(_ message: String) -> APIError { APIError(code: 400, reason: "BadRequest", message: message) }
    /// Upstream's answer to a request without valid credentials, word for word.
    public static let unauthorized = APIError(code: 401, reason: "Unauthorized", message: "Unauthorized")
    public static func notFound(_ message: String) -> APIError { APIError(code: 404, reason: "NotFound", message: message) }
    public static func methodNotAllowed(_ message: String) -> APIError { APIError(code: 405, reason: "MethodNotAllowed", message: message) }
    public static func unsupportedMediaType(_ message: String) -> APIError {
        APIError(code: 415, reason: "UnsupportedMediaType", message: message)
    }
    public static func tooLarge(_ message: String) -> APIError { APIError(code: 413, reason: "RequestEntityTooLarge", message: message) }

    /// 422 with one cause per field: `Deployment.apps "web" is invalid: spec.selector: Required value`.
    public static func invalid(_ resource: APIResource, name: String, _ errors: [FieldError]) -> APIError {
        let summary = errors.map { "\($0.field): \($0.message)" }.joined(separator: ", ")
        return APIError(code: 422, reason: "Invalid", message: "\(resource.qualifiedKind) \"\(name)\" is invalid: \(summary)",
                        name: name, kind: resource.kind, group: resource.group,
                        causes: errors.map { Cause(reason: $0.reason, message: $0.message, field: $0.field) })
    }

    /// The metav1.Status body.
    public var status: JSON {
        var s: JSON = ["kind": "Status", "apiVersion": "v1", "metadata": [:], "status": "Failure",
                       "message": .string(message), "reason": .string(reason)]
        var details = JSONObject()
        if let name { details["name"] = .string(name) }
        if let group { details["group"] = .string(group) }
        if let kind { details["kind"] = .string(kind) }
        if !causes.isEmpty {
            details["causes"] = .array(causes.map { cause in
                var c: JSON = ["reason": .string(cause.reason), "message": .string(cause.message)]
                if !cause.field.isEmpty { c["field"] = .string(cause.field) }
                return c
            })
        }
        if !details.isEmpty { s["details"] = .object(details) }
        s["code"] = .int(Int64(code))
        return s
    }
}

/// An error the API answers with a Status of its own: handlers throw the store's or KemuAPI's
/// errors as they come, and the one catch at the top renders them (no ladder of conversions).
protocol StatusConvertible: Error {
    /// The Status for a request about `resource` (nil: not about one, or not known here).
    func apiError(about resource: APIResource?) -> APIError
}

extension APIError: StatusConvertible {
    func apiError(about resource: APIResource?) -> APIError { self }
}

extension StoreError: StatusConvertible {
    /// The store's failures, named the upstream way.
    func apiError(about resource: APIResource?) -> APIError {
        let (kind, group) = (resource?.resource, resource?.group)
        switch self {
        case .notFound(_, let name):
            return APIError(code: 404, reason: "NotFound", message: description, name: name, kind: kind, group: group)
        case .alreadyExists(_, let name):
            return APIError(code: 409, reason: "AlreadyExists", message: description, name: name, kind: kind, group: group)
        case .conflict(_, let name):
            return APIError(code: 409, reason: "Conflict", message: description, name: name, kind: kind, group: group)
        case .ownerGone(_, let name):
            return APIError(code: 409, reason: "Conflict", message: description, name: name, kind: kind, group: group)
        case .expired:
            return APIError(code: 410, reason: "Expired", message: description)
        case .invalid(let message):
            return APIError(code: 422, reason: "Invalid", message: message)
        }
    }
}

extension InputError: StatusConvertible {
    /// A body that is not JSON and a selector that does not parse are bad requests; a patch that
    /// cannot be applied is an invalid object.
    func apiError(about resource: APIResource?) -> APIError {
        switch kind {
        case .json: .badRequest("the request body is not valid JSON: \(self)")
        case .selector: .badRequest(message)
        case .patch: APIError(code: 422, reason: "Invalid", message: message)
        }
    }
}

/// One field's problem: `spec.replicas: Invalid value: -1: must be greater than or equal to 0`.
public struct FieldError: Sendable, Equatable {
    public var field: String
    /// FieldValueRequired, FieldValueInvalid, FieldValueNotSupported, FieldValueDuplicate, …
    public var reason: String
    public var message: String

    public static func required(_ field: String) -> FieldError {
        FieldError(field: field, reason: "FieldValueRequired", message: "Required value")
    }

    public static func invalid(_ field: String, _ value: String, _ detail: String) -> FieldError {
        FieldError(field: field, reason: "FieldValueInvalid", message: "Invalid value: \(value): \(detail)")
    }
}
