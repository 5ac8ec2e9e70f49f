import KemuAPI

/// The documents clients read to learn what the server serves (reference §2).
enum Discovery {
    static let aggregatedContentType = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"

    /// kubectl 1.32 asks for v2 first; a client that does not gets the legacy documents.
    static func wantsAggregated(_ accept: String?) -> Bool {
        guard let accept else { return false }
        return accept.split(separator: ",").contains { $0.contains("as=APIGroupDiscoveryList") && $0.contains("v=v2") && !$0.contains("v=v2beta1") }
    }

    static let version: JSON = [
        "major": "1", "minor": "32", "gitVersion": "v1.32.0-kemu", "gitCommit": "kemu", "gitTreeState": "clean",
        "buildDate": "2026-11-22T00:00:00Z", "goVersion": "go1.23", "compiler": "swift", "platform": "linux/amd64",
    ]

    static func aggregated(core: Bool) -> JSON {
        let groups = APIResources.groupVersions.filter { core ? $0.group.isEmpty : !$0.group.isEmpty }
        let items: [JSON] = groups.map { g in
            let versions: [JSON] = g.versions.map { version in
                ["version": .string(version), "freshness": "Current", "resources": .array(aggregatedResources(group: g.group, version: version))]
            }
            let metadata: JSON = g.group.isEmpty ? [:] : ["name": .string(g.group)]
            return ["metadata": metadata, "versions": .array(versions)]
        }
        return ["kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": [:], "items": .array(items)]
    }

    static func aggregatedResources(group: String, version: String) -> [JSON] {
        APIResources.all.filter { $0.group == group && $0.version == version }.map { r in
            var entry: JSON = [
                "resource": .string(r.resource), "singularResource": .string(r.singular),
                "scope": r.namespaced ? "Namespaced" : "Cluster",
                "responseKind": ["group": .string(r.group), "version": .string(r.version), "kind": .string(r.kind)],
                "verbs": .array(r.verbs.map { .string($0) }),
            ]
            if !r.shortNames.isEmpty { entry["shortNames"] = .array(r.shortNames.map { .string($0) }) }
            if !r.categories.isEmpty { entry["categories"] = .array(r.categories.map { .string($0) }) }
            entry["subresources"] = .array(r.subresources.map { sub in
                let kind: JSON = sub == "scale" ? ["group": "autoscaling", "version": "v1", "kind": "Scale"]
                    : sub == "eviction" ? ["group": "policy", "version": "v1", "kind": "Eviction"]
                    : ["group": .string(r.group), "version": .string(r.version), "kind": .string(r.kind)]
                return ["subresource": .string(sub), "responseKind": kind, "verbs": subresourceVerbs(sub)]
            })
            return entry
        }
    }

    static func subresourceVerbs(_ sub: String) -> JSON {
        switch sub {
        case "status", "scale": ["get", "patch", "update"]
        case "log": ["get"]
        case "exec": ["create", "get"]
        default: ["create"]
        }
    }

    static func legacyCore(host: String) -> JSON {
        ["kind": "APIVersions", "versions": ["v1"],
         "serverAddressByClientCIDRs": [["clientCIDR": "0.0.0.0/0", "serverAddress": .string(host)]]]
    }

    static var legacyGroups: JSON {
        let groups: [JSON] = APIResources.groupVersions.filter { !$0.group.isEmpty }.map { g in
            let versions: [JSON] = g.versions.map { ["groupVersion": .string("\(g.group)/\($0)"), "version": .string($0)] }
            return ["name": .string(g.group), "versions": .array(versions), "preferredVersion": versions[0]]
        }
        return ["kind": "APIGroupList", "apiVersion": "v1", "groups": .array(groups)]
    }

    static func resourceList(group: String, version: String) -> JSON {
        var resources: [JSON] = []
        for r in APIResources.all where r.group == group && r.version == version {
            var entry: JSON = ["name": .string(r.resource), "singularName": .string(r.singular), "namespaced": .bool(r.namespaced),
                               "kind": .string(r.kind), "verbs": .array(r.verbs.map { .string($0) })]
            if !r.shortNames.isEmpty { entry["shortNames"] = .array(r.shortNames.map { .string($0) }) }
            if !r.categories.isEmpty { entry["categories"] = .array(r.categories.map { .string($0) }) }
            resources.append(entry)
            for sub in r.subresources {
                var s: JSON = ["name": .string("\(r.resource)/\(sub)"), "singularName": "", "namespaced": .bool(r.namespaced),
                               "kind": .string(sub == "scale" ? "Scale" : sub == "eviction" ? "Eviction" : r.kind), "verbs": subresourceVerbs(sub)]
                if sub == "scale" { s["group"] = "autoscaling"; s["version"] = "v1" }
                if sub == "eviction" { s["group"] = "policy"; s["version"] = "v1" }
                resources.append(s)
            }
        }
        return ["kind": "APIResourceList", "apiVersion": "v1", "groupVersion": .string(group.isEmpty ? version : "\(group)/\(version)"),
                "resources": .array(resources)]
    }
}

/// Just enough OpenAPI v3 for kubectl's create/apply: every kind's PATCH path with a
/// `fieldValidation` parameter, so kubectl leaves validation to the server (reference §3).
enum OpenAPI {
    static var root: JSON {
        var paths = JSONObject()
        for g in APIResources.groups {
            let key = g.group.isEmpty ? "api/\(g.version)" : "apis/\(g.group)/\(g.version)"
            paths[key] = ["serverRelativeURL": .string("/openapi/v3/\(key)?hash=kemu1")]
        }
        return ["paths": .object(paths)]
    }

    static func document(group: String, version: String) -> JSON {
        var paths = JSONObject()
        for r in APIResources.all where r.group == group && r.version == version {
            let prefix = group.isEmpty ? "/api/\(version)" : "/apis/\(group)/\(version)"
            let path = r.namespaced ? "\(prefix)/namespaces/{namespace}/\(r.resource)/{name}" : "\(prefix)/\(r.resource)/{name}"
            paths[path] = ["patch": [
                "x-kubernetes-group-version-kind": ["group": .string(r.group), "version": .string(r.version), "kind": .string(r.kind)],
                "x-kubernetes-action": "patch",
                "parameters": [["name": "fieldValidation", "in": "query", "schema": ["type": "string"]]],
                "responses": ["200": ["description": "OK"]],
            ]]
        }
        // A schema per kind from the field names kemu knows (FieldSchemas), for `kubectl explain`:
        // nested structures as objects and lists, leaves without a type where kemu does not list one.
        var schemas = JSONObject()
        for r in APIResources.all where r.group == group && r.version == version {
            guard let fields = FieldSchema.kinds[r.qualifiedKind] ?? FieldSchema.kinds[r.kind] else { continue }
            let package = group.isEmpty ? "core" : (group.split(separator: ".").first.map(String.init) ?? group)
            var schema = schemaJSON(fields, kind: r.kind, components: &schemas)
            schema["description"] = .string("\(r.kind) (\(r.groupVersion)), as kemu serves it: the fields kemu reads and validates.")
            schema["x-kubernetes-group-version-kind"] = [["group": .string(r.group), "kind": .string(r.kind), "version": .string(r.version)]]
            schemas["io.k8s.api.\(package).\(version).\(r.kind)"] = schema
        }
        return ["openapi": "3.0.0", "info": ["title": "Kubernetes", "version": "v1.32.0"], "components": ["schemas": .object(schemas)],
                "paths": .object(paths)]
    }

    /// A structure's schema. Structures with a name upstream's users know (`Container`,
    /// `ObjectMeta`, `PodSpec`…) are components of the document, referred to as upstream's are,
    /// so `kubectl explain` shows `<[]Container>` rather than `<[]Object>`.
    static func schemaJSON(_ schema: FieldSchema, name: String = "", kind: String, components: inout JSONObject) -> JSON {
        switch schema {
        case .any: return leaf(name)
        case .list(let item): return ["type": "array", "items": schemaJSON(item, name: name, kind: kind, components: &components)]
        case .object(let fields):
            if name.isEmpty { return structure(fields, kind: kind, components: &components) }  // the kind itself
            let typeName = name == "spec" && !kind.isEmpty ? "\(kind)Spec" : namedTypes[name]
            guard let typeName else { return structure(fields, kind: "", components: &components) }
            let key = "io.k8s.api.core.v1.\(typeName)"
            if components[key] == nil {
                components[key] = [:]  // (a structure that holds itself stops here)
                // A template's or a claim's own `spec` is its kind's: PodTemplateSpec → PodSpec.
                let owner = typeName.hasSuffix("TemplateSpec") ? String(typeName.dropLast("TemplateSpec".count)) : typeName
                components[key] = structure(fields, kind: owner, components: &components)
            }
            return ["allOf": [["$ref": .string("#/components/schemas/\(key)")]], "default": [:]]
        }
    }

    static func structure(_ fields: [String: FieldSchema], kind: String, components: inout JSONObject) -> JSON {
        var properties = JSONObject()
        for key in fields.keys.sorted() { if let field = fields[key] { properties[key] = schemaJSON(field, name: key, kind: kind, components: &components) } }
        return ["type": "object", "properties": .object(properties)]
    }

    /// Field name → upstream's type name, where the name alone says which (a kind's `spec` is
    /// `<Kind>Spec`).
    static let namedTypes = [
        "metadata": "ObjectMeta", "containers": "Container", "initContainers": "Container", "volumes": "Volume",
        "template": "PodTemplateSpec", "jobTemplate": "JobTemplateSpec", "selector": "LabelSelector", "livenessProbe": "Probe",
        "readinessProbe": "Probe", "startupProbe": "Probe", "env": "EnvVar", "envFrom": "EnvFromSource", "volumeMounts": "VolumeMount",
        "tolerations": "Toleration", "lifecycle": "Lifecycle", "ownerReferences": "OwnerReference",
        "matchExpressions": "LabelSelectorRequirement", "volumeClaimTemplates": "PersistentVolumeClaim", "taints": "Taint",
    ]

    /// A leaf field's type, by its name as upstream's types use it (kubectl explain shows
    /// `<integer>`, `<boolean>`, `<map[string]string>`, `<[]string>`, `<IntOrString>`, `<string>`).
    static func leaf(_ name: String) -> JSON {
        if intOrString.contains(name) { return ["type": "string", "format": "int-or-string", "x-kubernetes-int-or-string": true] }
        if integers.contains(name) || name.hasSuffix("Seconds") { return ["type": "integer", "format": "int32"] }
        if booleans.contains(name) { return ["type": "boolean"] }
        if stringMaps.contains(name) { return ["type": "object", "additionalProperties": ["type": "string"]] }
        if quantityMaps.contains(name) { return ["type": "object", "additionalProperties": ["type": "string", "format": "quantity"]] }
        if stringLists.contains(name) { return ["type": "array", "items": ["type": "string"]] }
        if objects.contains(name) { return ["type": "object"] }
        if objectLists.contains(name) { return ["type": "array", "items": ["type": "object"]] }
        return ["type": "string"]
    }

    static let intOrString: Set = ["port", "targetPort", "maxSurge", "maxUnavailable", "minAvailable", "divisor", "sizeLimit"]
    static let integers: Set = [
        "replicas", "revisionHistoryLimit", "containerPort", "hostPort", "nodePort", "successThreshold", "failureThreshold",
        "generation", "priority", "weight", "completions", "parallelism", "backoffLimit", "count", "runAsUser", "runAsGroup", "fsGroup",
        "defaultMode", "mode", "partition", "value", "backoffLimitPerIndex", "maxFailedIndexes", "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit", "healthCheckNodePort", "minReadySeconds", "expirationSeconds", "maxSkew", "minDomains",
        "deprecatedCount",
    ]
    static let booleans: Set = [
        "stdin", "stdinOnce", "tty", "optional", "readOnly", "privileged", "paused", "suspend", "hostNetwork", "hostPID", "hostIPC",
        "automountServiceAccountToken", "immutable", "controller", "blockOwnerDeletion", "allowPrivilegeEscalation", "runAsNonRoot",
        "publishNotReadyAddresses", "readOnlyRootFilesystem", "shareProcessNamespace", "enableServiceLinks", "setHostnameAsFQDN",
        "hostUsers", "manualSelector", "allocateLoadBalancerNodePorts", "globalDefault",
    ]
    static let stringMaps: Set = ["labels", "annotations", "nodeSelector", "data", "stringData", "binaryData", "matchLabels"]
    static let quantityMaps: Set = ["limits", "requests", "hard", "used", "overhead", "capacity", "allocatable"]
    static let stringLists: Set = [
        "command", "args", "finalizers", "externalIPs", "values", "verbs", "apiGroups", "resources", "resourceNames",
        "nonResourceURLs", "accessModes", "clusterIPs", "ipFamilies", "scopes", "audiences", "add", "drop", "loadBalancerSourceRanges",
        "supplementalGroups", "searches", "nameservers",
    ]
    static let objects: Set = ["status", "affinity", "dnsConfig", "os", "seLinuxOptions", "windowsOptions", "seccompProfile",
                               "appArmorProfile", "sessionAffinityConfig", "dataSource", "dataSourceRef", "podFailurePolicy",
                               "successPolicy", "grpc", "selector", "regarding", "related",
                               "involvedObject", "source", "series", "deprecatedSource", "roleRef", "aggregationRule"]
    static let objectLists: Set = ["items", "sources", "imagePullSecrets", "hostAliases", "readinessGates", "topologySpreadConstraints",
                                   "schedulingGates", "resourceClaims", "ephemeralContainers", "sysctls", "claims", "resizePolicy",
                                   "volumeDevices", "managedFields", "httpHeaders"]
}
