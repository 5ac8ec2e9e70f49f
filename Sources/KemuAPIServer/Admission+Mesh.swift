import Foundation
import KemuAPI
import KemuPKI

/// certificates.k8s.io/v1 CertificateSigningRequests, as upstream validates them.
extension Admission {
    static func validateCertificateRequest(_ o: JSON) -> [FieldError] {
        var errors: [FieldError] = []
        if let request = o[path: "spec.request"] {
            let pem = request.string.flatMap { Data(base64Encoded: $0) }.flatMap { String(data: $0, encoding: .utf8) }
            if pem == nil {
                errors.append(.invalid("spec.request", "<request>", "must be base64-encoded"))
            } else if pem?.contains("-----BEGIN CERTIFICATE REQUEST-----") != true {
                errors.append(.invalid("spec.request", "<request>", "no PEM block of type CERTIFICATE REQUEST found"))
            }
        } else {
            errors.append(.required("spec.request"))
        }
        if let signer = o[path: "spec.signerName"] {
            let name = signer.string ?? ""
            let parts = name.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
            if parts.count != 2 || !isDNSSubdomain(String(parts[0])) || parts[1].isEmpty {
                errors.append(.invalid("spec.signerName", signer.text(), "must be a fully qualified domain and path of the form 'example.com/signer-name'"))
            }
        } else {
            errors.append(.required("spec.signerName"))
        }
        if let seconds = o[path: "spec.expirationSeconds"], (seconds.int ?? 0) < Mesh.minimumCertificateSeconds || seconds.string != nil {
            errors.append(.invalid("spec.expirationSeconds", seconds.text(), "may not specify a duration less than 600 seconds (10 minutes)"))
        }
        if let usages = o[path: "spec.usages"] {
            let known: Set<String> = ["signing", "digital signature", "content commitment", "key encipherment", "key agreement",
                                      "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
                                      "server auth", "client auth", "code signing", "email protection", "s/mime", "ipsec end system",
                                      "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"]
            for (i, usage) in (usages.array ?? []).enumerated() where !known.contains(usage.string ?? "") {
                errors.append(FieldError(field: "spec.usages[\(i)]", reason: "FieldValueNotSupported", message: "Unsupported value: \(usage.text())"))
            }
            if usages.array == nil { errors.append(.invalid("spec.usages", usages.text(), "must be a list")) }
        }
        return errors
    }

    /// The failover lab's marks on a Node, which every proxy reads: refused when a proxy could
    /// not make sense of them, rather than ignored there.
    static func validateNodeMeshAnnotations(_ o: JSON) -> [FieldError] {
        let annotations = o.annotations
        var errors: [FieldError] = []
        if let skew = annotations[Mesh.clockSkewAnnotation], Mesh.clockSkew(skew) == nil {
            errors.append(.invalid("metadata.annotations[\(Mesh.clockSkewAnnotation)]", "\"\(skew)\"",
                                   "must be a signed duration such as 25h, -90m or 0, at most 10 years either way"))
        }
        if let revoked = annotations[Mesh.revokedAnnotation] {
            let entries = revoked.split(separator: ",").count
            if Mesh.revokedSerials(revoked).count != entries {
                errors.append(.invalid("metadata.annotations[\(Mesh.revokedAnnotation)]", "\"\(revoked.prefix(80))\"",
                                       "must be hex serials (1-40 digits), each with an optional @expiry in Unix seconds, separated by commas"))
            }
        }
        return errors
    }

    /// Istio's AuthorizationPolicy and PeerAuthentication, as far as kemu enforces them.
    static func validateMeshPolicy(_ o: JSON, _ r: APIResource) -> [FieldError] {
        if o["spec"] != nil && o["spec"]?.object == nil { return [.invalid("spec", o["spec"]?.text() ?? "", "must be an object")] }
        let problems: FieldProblems?
        switch r.kind {
        case "AuthorizationPolicy":
            if case let .failure(p) = AuthorizationPolicy.parse(o) { problems = p } else { problems = nil }
        default:
            if case let .failure(p) = PeerAuthentication.parse(o) { problems = p } else { problems = nil }
        }
        return (problems?.items ?? []).map { FieldError(field: $0.field, reason: "FieldValueInvalid", message: "Invalid value: \($0.message)") }
    }

    /// A Gateway API route: what the CRDs' schemas refuse, refused naming the field.
    static func validateRoute(_ o: JSON) -> [FieldError] {
        if o["spec"] != nil && o["spec"]?.object == nil { return [.invalid("spec", o["spec"]?.text() ?? "", "must be an object")] }
        guard case let .failure(problems) = TrafficRoute.parse(o) else { return [] }
        return problems.items.map { FieldError(field: $0.field, reason: "FieldValueInvalid", message: "Invalid value: \($0.message)") }
    }

    /// A request's spec is what its author asked for: it cannot change afterwards.
    static func validateCertificateRequestUpdate(_ new: JSON, _ old: JSON) -> [FieldError] {
        new["spec"] == old["spec"] ? [] : [.invalid("spec", "<spec>", "field is immutable")]
    }
}

extension APIServer {
    /// Who asked, as upstream records it on a new request (whatever the body said): a signer
    /// decides by it.
    func recordRequester(_ o: inout JSON, _ t: Target) {
        var spec = o["spec"] ?? [:]
        let user = t.user ?? Self.anonymous
        spec["username"] = .string(user.user)
        var groups = user.groups
        if t.user != nil, !groups.contains("system:authenticated") { groups.append("system:authenticated") }
        spec["groups"] = .array(groups.map { .string($0) })
        spec["uid"] = nil
        spec["extra"] = nil
        o["spec"] = spec
    }
}
