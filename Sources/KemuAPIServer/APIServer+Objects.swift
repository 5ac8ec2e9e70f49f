import HTTPTypes
import Hummingbird
import KemuAPI
import KemuStore

extension APIServer {
    func serve(_ t: Target, _ request: Request, _ query: Query) async throws -> Response {
        let t = t.stored()
        let r = t.resource
        if r.namespaced && t.namespace == nil && (t.name != nil || request.method != .get) {
            throw APIError.notFound("the server could not find the requested resource")
        }
        do {
            if r.computed { return try metrics(t, request, query) }
            if !r.stored { return try await review(t, request) }
            let dryRun = request.method == .get ? false : try query.dryRun()  // reads ignore it, as upstream
            return try await Store.$dryRun.withValue(dryRun) { try await dispatch(t, request, query) }
        } catch let error as any StatusConvertible {
            throw error.apiError(about: r)
        }
    }

    func dispatch(_ t: Target, _ request: Request, _ query: Query) async throws -> Response {
        let r = t.resource
        switch (request.method, t.name, t.subresource) {
        case (.get, nil, _):
            return query.flag("watch") ? try watch(t, request, query) : try list(t, request, query)
        case (.get, let name?, "scale"):
            return Self.json(Scale.of(try get(t, name), r))
        case (.get, let name?, "log") where r.resource == "pods":
            return try logs(t, name, query)
        case (.get, let name?, nil), (.get, let name?, "status"):
            return respond(t.outward(try get(t, name)), t, request, query)
        case (.post, nil, nil):
            return try await create(t, request, query)
        case (.put, let name?, let sub):
            return try await replace(t, name, sub, request, query)
        case (.patch, let name?, let sub):
            return try await patch(t, name, sub, request, query)
        case (.delete, let name?, nil):
            return try await delete(t, name, request)
        case (.delete, nil, nil):
            return try await deleteCollection(t, request, query)
        case (.post, let name?, "token") where r.resource == "serviceaccounts":
            return try await requestToken(t, name, request)
        case (.post, let name?, "eviction") where r.resource == "pods":
            return try await evict(t, name, request)
        default:
            throw APIError.methodNotAllowed("the server does not allow this method on the requested resource")
        }
    }

    func get(_ t: Target, _ name: String) throws -> JSON {
        guard let o = store.get(t.resource.qualifiedName, namespace: t.namespace ?? "", name: name) else {
            throw StoreError.notFound(resource: t.resource.qualifiedName, name: name)
        }
        return o
    }

    func list(_ t: Target, _ request: Request, _ query: Query) throws -> Response {
        let labels = try query["labelSelector"].map(LabelSelector.init(parsing:)) ?? .everything
        let fields = try query["fieldSelector"].map(FieldSelector.init(parsing:)) ?? .everything
        var items: [JSON], revision: Int64
        var meta: JSON = [:]
        if let page = try ListPage(query) {
            let cut = store.listPage(t.resource.qualifiedName, namespace: t.namespace, labels: labels, fields: fields,
                                     after: page.after, limit: page.limit ?? Int.max)
            (items, revision) = (cut.items, page.revision ?? cut.revision)
            if cut.more, let last = items.last {
                meta["continue"] = .string(ListPage.encode((last.namespace, last.name), revision))
                if let remaining = cut.remaining { meta["remainingItemCount"] = .int(Int64(remaining)) }
            }
        } else {
            (items, revision) = store.list(t.resource.qualifiedName, namespace: t.namespace, labels: labels, fields: fields)
        }
        meta["resourceVersion"] = .string(String(revision))
        if Tables.wanted(request) {
            var table = Tables.table(items, t.resource, revision: revision, includeObject: query["includeObject"])
            table["metadata"] = meta
            return Self.json(table)
        }
        let shown = t.presented ?? t.resource
        let list: JSON = ["kind": .string(shown.listKind), "apiVersion": .string(shown.groupVersion),
                          "metadata": meta, "items": .array(items.map(t.outward))]
        return Self.json(list)
    }

    func respond(_ object: JSON, _ t: Target, _ request: Request, _ query: Query, status: HTTPResponse.Status = .ok) -> Response {
        if Tables.wanted(request) {
            return Self.json(Tables.table([object], t.resource, revision: object.resourceVersion ?? 0, includeObject: query["includeObject"]), status: status)
        }
        return Self.json(object, status: status)
    }

    /// The body as an object of this resource, in this namespace: kind and apiVersion must match
    /// when given, and are filled in when not.
    func incoming(_ t: Target, _ request: Request, name: String? = nil) async throws -> JSON {
        var o = try await body(request)
        guard o.object != nil else { throw APIError.badRequest("the request body must be a JSON object") }
        if t.presented != nil {
            try conformPresented(o, t)
            o = t.inward(o)
        }
        try conform(&o, t, name: name)
        return o
    }

    /// A body for a converted resource names the client's resource, if it names one.
    func conformPresented(_ o: JSON, _ t: Target) throws {
        guard let shown = t.presented, let apiVersion = o["apiVersion"]?.string, !apiVersion.isEmpty else { return }
        if apiVersion != shown.groupVersion { throw APIError.badRequest("the apiVersion \(apiVersion) does not match the path's \(shown.groupVersion)") }
    }

    func conform(_ o: inout JSON, _ t: Target, name: String?) throws {
        let r = t.resource
        if let kind = o["kind"]?.string, !kind.isEmpty, kind != r.kind {
            throw APIError.badRequest("the kind \(kind) does not match the path's \(r.kind)")
        }
        if let apiVersion = o["apiVersion"]?.string, !apiVersion.isEmpty, apiVersion != r.groupVersion {
            throw APIError.badRequest("the apiVersion \(apiVersion) does not match the path's \(r.groupVersion)")
        }
        o["kind"] = .string(r.kind)
        o["apiVersion"] = .string(r.groupVersion)
        if o["metadata"]?.object == nil { o["metadata"] = [:] }
        if let name {
            if !o.name.isEmpty && o.name != name {
                throw APIError.badRequest("the name of the object (\(o.name)) does not match the name on the URL (\(name))")
            }
            o.name = name
        }
        if r.namespaced {
            let ns = t.namespace ?? ""
            if !o.namespace.isEmpty && o.namespace != ns {
                throw APIError.badRequest("the namespace of the provided object does not match the namespace sent on the request")
            }
            o.namespace = ns
        } else {
            o["metadata"]?["namespace"] = nil
        }
        // Clients send "creationTimestamp": null (kubectl expose, rollout undo); the server owns it.
        if o[path: "metadata.creationTimestamp"]?.isNull == true { o["metadata"]?["creationTimestamp"] = nil }
    }

    func requireNamespace(_ t: Target) throws {
        guard t.resource.namespaced, let ns = t.namespace else { return }
        if store.get("namespaces", name: ns) == nil { throw StoreError.notFound(resource: "namespaces", name: ns) }
    }

    func create(_ t: Target, _ request: Request, _ query: Query) async throws -> Response {
        let validation = try FieldValidation(query)
        var o = try await incoming(t, request)
        let warnings = try validation.check(o, t.resource)
        try requireNamespace(t)
        o.resourceVersion = nil
        if t.resource.kind == "Ingress" { defaultIngressClass(&o) }
        try admit(&o, t)
        if t.resource.kind == "Pod" {
            try admitServiceAccount(&o)
            try admitPriority(&o)
            try admitLimitRanges(&o)
        }
        if t.resource.kind == "LimitRange" { o = LimitRanges.defaulted(o) }
        if t.resource.kind == "CertificateSigningRequest" { recordRequester(&o, t) }
        return Self.warned(Self.json(t.outward(try createWithinQuota(o, t.resource)), status: .created), warnings)
    }

    /// Upstream's DefaultIngressClass admission: a new Ingress that names no class (field or the
    /// old annotation) gets the one marked `ingressclass.kubernetes.io/is-default-class: "true"`
    /// (the newest, when several are).
    func defaultIngressClass(_ o: inout JSON) {
        guard o[path: "spec.ingressClassName"] == nil, o.annotations["kubernetes.io/ingress.class"] == nil else { return }
        let defaults = store.list("ingressclasses.networking.k8s.io").items
            .filter { $0.annotations["ingressclass.kubernetes.io/is-default-class"] == "true" }
            .max { ($0[path: "metadata.creationTimestamp"]?.string ?? "", $0.name) < ($1[path: "metadata.creationTimestamp"]?.string ?? "", $1.name) }
        if let name = defaults?.name { o["spec", default: [:]]["ingressClassName"] = .string(name) }
    }

    /// A response with upstream's `Warning: 299 - "…"` headers (kubectl prints them).
    static func warned(_ response: Response, _ warnings: [String]) -> Response {
        guard !warnings.isEmpty, let name = HTTPField.Name("Warning") else { return response }
        var response = response
        for warning in warnings { response.headers.append(HTTPField(name: name, value: warning)) }
        return response
    }

    /// Stores a new object; a Service first gets its ClusterIP, NodePorts and LB IP, which go back
    /// to the pool if the store refuses it.
    func createAllocating(_ r: APIResource, _ object: JSON) throws -> JSON {
        var o = object
        guard r.kind == "Service" else { return try store.create(r.qualifiedName, o) }
        let errors = services.allocate(&o)
        if !errors.isEmpty { throw APIError.invalid(r, name: o.name, errors) }
        do {
            return try store.create(r.qualifiedName, o)
        } catch {
            services.release(o)
            throw error
        }
    }

    /// An updated Service keeps its ClusterIP (which cannot change) and its NodePorts unless it
    /// names new ones; a Service that becomes NodePort or LoadBalancer gets ports then.
    func reallocate(_ r: APIResource, _ new: inout JSON, _ old: JSON) throws {
        guard r.kind == "Service" else { return }
        let oldIP = old[path: "spec.clusterIP"]?.string ?? ""
        let newIP = new[path: "spec.clusterIP"]?.string ?? ""
        if newIP.isEmpty {
            new["spec", default: [:]]["clusterIP"] = old[path: "spec.clusterIP"]
            new["spec", default: [:]]["clusterIPs"] = old[path: "spec.clusterIPs"]
        } else if newIP != oldIP {
            throw APIError.invalid(r, name: new.name, [.invalid("spec.clusterIPs[0]", "\"\(newIP)\"", "may not change once set")])
        }
        if var ports = new[path: "spec.ports"]?.array {
            let oldPorts = old[path: "spec.ports"]?.array ?? []
            for i in ports.indices where ports[i]["nodePort"] == nil {
                ports[i]["nodePort"] = oldPorts.first { $0["port"] == ports[i]["port"] && $0["protocol"] == ports[i]["protocol"] }?["nodePort"]
            }
            new["spec", default: [:]]["ports"] = .array(ports)
        }
        if new["status"] == nil { new["status"] = old["status"] }
        let errors = services.reallocate(&new, replacing: old)
        if !errors.isEmpty { throw APIError.invalid(r, name: new.name, errors) }
    }

    func replace(_ t: Target, _ name: String, _ sub: String?, _ request: Request, _ query: Query) async throws -> Response {
        let validation = try FieldValidation(query)
        if sub == "scale" {
            let scale = try await body(request)
            return Self.json(try setReplicas(t, name, scale))
        }
        var o = try await incoming(t, request, name: name)
        let warnings = sub == nil ? try validation.check(o, t.resource) : []
        try admit(&o, t)
        if t.resource.kind == "Service", sub == nil {
            let current = try get(t, name)
            try reallocate(t.resource, &o, current)
        }
        if t.resource.kind.hasSuffix("RoleBinding") || ["ConfigMap", "Secret"].contains(t.resource.kind)
            || (t.resource.kind == "CertificateSigningRequest" && sub == nil) {
            try Admission.validateUpdate(o, try get(t, name), t.resource)
        }
        return Self.warned(Self.json(t.outward(try store.update(t.resource.qualifiedName, o, part: part(t.resource, sub)))), warnings)
    }

    /// PUT on an object leaves its status alone and PUT on /status touches only status, for every
    /// resource that has a status subresource.
    func part(_ r: APIResource, _ sub: String?) -> Store.UpdatePart {
        sub == "status" || sub == "approval" ? .status : r.subresources.contains("status") ? .main : .all
    }

    func setReplicas(_ t: Target, _ name: String, _ scale: JSON) throws -> JSON {
        let errors = Admission.validateReplicas(scale[path: "spec.replicas"] ?? .null, required: true)
        guard errors.isEmpty, let replicas = scale[path: "spec.replicas"]?.int else { throw APIError.invalid(t.resource, name: name, errors) }
        let expected = scale.resourceVersion
        let updated = try store.modify(t.resource.qualifiedName, namespace: t.namespace ?? "", name: name, part: .main) { o in
            if let expected, expected != o.resourceVersion { throw StoreError.conflict(resource: t.resource.qualifiedName, name: name) }
            o["spec", default: [:]]["replicas"] = .int(replicas)
        }
        return Scale.of(updated, t.resource)
    }

    func patch(_ t: Target, _ name: String, _ sub: String?, _ request: Request, _ query: Query) async throws -> Response {
        let contentType = request.headers[.contentType]?.split(separator: ";").first.map(String.init) ?? ""
        let validation = try FieldValidation(query)
        let patch = try await body(request)
        // Upstream reads merge and strategic patches into a map, and a JSON patch as a list of
        // operations on fields: a patch of null, "x" or [1,2], or an operation on the root,
        // would replace the whole object (wiping its spec or data) and is refused.
        switch contentType {
        case "application/merge-patch+json", "application/strategic-merge-patch+json", "application/apply-patch+yaml":
            guard patch.object != nil else { throw InputError.patch("a merge patch must be a JSON object, not \(patch.text().prefix(40))") }
        case "application/json-patch+json":
            for (i, op) in (patch.array ?? []).enumerated() where op["path"]?.string == "" {
                throw InputError.patch("operation \(i): path \"\" would replace the whole object; patch its fields")
            }
        default: break
        }
        let apply: (JSON) throws -> JSON
        switch contentType {
        case "application/merge-patch+json", "application/apply-patch+yaml": apply = { t.inward(Patch.merge(t.outward($0), patch)) }
        case "application/json-patch+json": apply = { t.inward(try Patch.jsonPatch(t.outward($0), patch)) }
        case "application/strategic-merge-patch+json": apply = { t.inward(try Patch.strategicMerge(t.outward($0), patch)) }
        default:
            throw APIError.unsupportedMediaType("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json")
        }
        let qualified = t.resource.qualifiedName
        // Server-side apply of an object that does not exist yet creates it.
        if contentType == "application/apply-patch+yaml", sub == nil, store.get(qualified, namespace: t.namespace ?? "", name: name) == nil {
            var o = t.inward(patch)
            try conform(&o, t, name: name)
            let warnings = try validation.check(o, t.resource)
            try requireNamespace(t)
            try admit(&o, t)
            if t.resource.kind == "Pod" {
                try admitServiceAccount(&o)
                try admitPriority(&o)
                try admitLimitRanges(&o)
            }
            return Self.warned(Self.json(t.outward(try createWithinQuota(o, t.resource)), status: .created), warnings)
        }
        if sub == "scale" {
            let current = Scale.of(try get(t, name), t.resource)
            return Self.json(try setReplicas(t, name, try apply(current)))
        }
        let pinned = patch.resourceVersion
        var warnings: [String] = []
        let updated = try store.modify(qualified, namespace: t.namespace ?? "", name: name, part: part(t.resource, sub)) { o in
            var patched = try apply(o)
            guard patched.object != nil else { throw InputError.patch("the patched object is not a JSON object") }
            try conform(&patched, t, name: name)
            if let pinned, pinned != o.resourceVersion { throw StoreError.conflict(resource: qualified, name: name) }
            patched.resourceVersion = o.resourceVersion
            if sub == nil { warnings = try validation.check(patched, t.resource) }
            try admit(&patched, t)
            try Admission.validateUpdate(patched, o, t.resource)
            if sub == nil { try reallocate(t.resource, &patched, o) }
            o = patched
        }
        return Self.warned(Self.json(t.outward(updated)), warnings)
    }

    /// Defaults and validation (Admission), then what needs the other objects: a Fault must not
    /// overlap another on the same Service.
    func admit(_ o: inout JSON, _ t: Target) throws {
        try restrictWriter(o, t)
        try Admission.admit(&o, t.resource)
        if t.resource.kind == "Fault", let overlap = Admission.faultOverlaps(o, store.list(t.resource.qualifiedName, namespace: o.namespace).items) {
            throw APIError.invalid(t.resource, name: o.name, [overlap])
        }
    }
}

/// autoscaling/v1 Scale, the view `kubectl scale` reads and writes.
enum Scale {
    static func of(_ o: JSON, _ r: APIResource) -> JSON {
        var meta = JSONObject()
        for key in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"] { meta[key] = o[path: "metadata.\(key)"] }
        let selector: String
        if let s = try? LabelSelector(json: o[path: "spec.selector"]), r.group == "apps" {
            selector = s.description
        } else {
            selector = LabelSelector(matchLabels: JSON.stringMap(o[path: "spec.selector"])).description
        }
        return ["kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": .object(meta),
                "spec": ["replicas": .int(o[path: "spec.replicas"]?.int ?? 0)],
                "status": ["replicas": .int(o[path: "status.replicas"]?.int ?? 0), "selector": .string(selector)]]
    }

}
