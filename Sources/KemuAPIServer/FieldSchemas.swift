import KemuAPI

/// Which fields an object may have, for `fieldValidation` (upstream checks every field against the
/// kind's OpenAPI schema; kemu lists the field names of the structures users write — pod specs,
/// containers, probes, Services, workloads — and stops at `.any` where it lists no deeper).
/// Names are upstream's (k8s.io/api, 1.32).
indirect enum FieldSchema: Sendable {
    /// Not checked below this point.
    case any
    case object([String: FieldSchema])
    /// A list whose items have this schema.
    case list(FieldSchema)

    /// The paths in `value` this schema does not have, as upstream names them
    /// (`spec.template.spec.containers[0].imagee`).
    func unknownFields(in value: JSON, at path: String, into found: inout [String]) {
        switch (self, value) {
        case (.object(let fields), .object(let object)):
            for (key, child) in object {
                let at = path.isEmpty ? key : "\(path).\(key)"
                guard let schema = fields[key] else { found.append(at); continue }
                schema.unknownFields(in: child, at: at, into: &found)
            }
        case (.list(let item), .array(let items)):
            for (i, child) in items.enumerated() { item.unknownFields(in: child, at: "\(path)[\(i)]", into: &found) }
        default:
            break  // .any, or a value of another type (validation's to refuse)
        }
    }
}

extension FieldSchema {
    static func fields(_ names: [String], _ nested: [String: FieldSchema] = [:]) -> FieldSchema {
        var fields = Dictionary(uniqueKeysWithValues: names.map { ($0, FieldSchema.any) })
        fields.merge(nested) { _, new in new }
        return .object(fields)
    }

    static let objectMeta = fields(
        ["name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation", "creationTimestamp",
         "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "finalizers", "managedFields"],
        ["ownerReferences": .list(fields(["apiVersion", "kind", "name", "uid", "controller", "blockOwnerDeletion"]))])

    static let labelSelector = fields(["matchLabels"], ["matchExpressions": .list(fields(["key", "operator", "values"]))])

    static let handler: [String: FieldSchema] = [
        "exec": fields(["command"]),
        "httpGet": fields(["path", "port", "host", "scheme"], ["httpHeaders": .list(fields(["name", "value"]))]),
        "tcpSocket": fields(["port", "host"]),
    ]
    static let probe = fields(["initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold",
                               "terminationGracePeriodSeconds"], handler.merging(["grpc": fields(["port", "service"])]) { a, _ in a })
    static let lifecycleHandler = fields([], handler.merging(["sleep": fields(["seconds"])]) { a, _ in a })

    static let keyReference = fields(["name", "key", "optional"])
    static let container = fields(
        ["name", "image", "command", "args", "workingDir", "resizePolicy", "restartPolicy", "volumeDevices", "terminationMessagePath",
         "terminationMessagePolicy", "imagePullPolicy", "stdin", "stdinOnce", "tty"],
        ["ports": .list(fields(["name", "hostPort", "containerPort", "protocol", "hostIP"])),
         "env": .list(fields(["name", "value"], ["valueFrom": fields([], [
            "fieldRef": fields(["apiVersion", "fieldPath"]), "resourceFieldRef": fields(["containerName", "resource", "divisor"]),
            "configMapKeyRef": keyReference, "secretKeyRef": keyReference])])),
         "envFrom": .list(fields(["prefix"], ["configMapRef": fields(["name", "optional"]), "secretRef": fields(["name", "optional"])])),
         "resources": fields(["limits", "requests", "claims"]),
         "volumeMounts": .list(fields(["name", "readOnly", "recursiveReadOnly", "mountPath", "subPath", "mountPropagation", "subPathExpr"])),
         "livenessProbe": probe, "readinessProbe": probe, "startupProbe": probe,
         "lifecycle": fields(["stopSignal"], ["postStart": lifecycleHandler, "preStop": lifecycleHandler]),
         "securityContext": fields(["privileged", "seLinuxOptions", "windowsOptions", "runAsUser", "runAsGroup", "runAsNonRoot",
                                    "readOnlyRootFilesystem", "allowPrivilegeEscalation", "procMount", "seccompProfile", "appArmorProfile"],
                                   ["capabilities": fields(["add", "drop"])])])

    /// The volume sources kemu backs are checked; the others are named so a manifest using them passes.
    static let volume = fields(
        ["name", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "nfs", "iscsi", "glusterfs", "rbd", "flexVolume", "cinder",
         "cephfs", "flocker", "fc", "azureFile", "vsphereVolume", "quobyte", "azureDisk", "photonPersistentDisk", "portworxVolume",
         "scaleIO", "storageos", "csi", "ephemeral", "image"],
        ["hostPath": fields(["path", "type"]), "emptyDir": fields(["medium", "sizeLimit"]),
         "configMap": fields(["name", "items", "defaultMode", "optional"]), "secret": fields(["secretName", "items", "defaultMode", "optional"]),
         "persistentVolumeClaim": fields(["claimName", "readOnly"]), "projected": fields(["sources", "defaultMode"]),
         "downwardAPI": fields(["items", "defaultMode"])])

    static let podSpec = fields(
        ["restartPolicy", "terminationGracePeriodSeconds", "activeDeadlineSeconds", "dnsPolicy", "nodeSelector", "serviceAccountName",
         "serviceAccount", "automountServiceAccountToken", "nodeName", "hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace",
         "imagePullSecrets", "hostname", "subdomain", "affinity", "schedulerName", "hostAliases", "priorityClassName", "priority",
         "dnsConfig", "readinessGates", "runtimeClassName", "enableServiceLinks", "preemptionPolicy", "overhead",
         "topologySpreadConstraints", "setHostnameAsFQDN", "os", "hostUsers", "schedulingGates", "resourceClaims", "resources",
         "ephemeralContainers"],
        ["containers": .list(container), "initContainers": .list(container), "volumes": .list(volume),
         "tolerations": .list(fields(["key", "operator", "value", "effect", "tolerationSeconds"])),
         "securityContext": fields(["seLinuxOptions", "windowsOptions", "runAsUser", "runAsGroup", "runAsNonRoot", "supplementalGroups",
                                    "supplementalGroupsPolicy", "fsGroup", "sysctls", "fsGroupChangePolicy", "seccompProfile",
                                    "appArmorProfile", "seLinuxChangePolicy"])])

    static let podTemplate = fields([], ["metadata": objectMeta, "spec": podSpec])
    static let claimSpec = fields(["accessModes", "volumeName", "storageClassName", "volumeMode", "dataSource", "dataSourceRef",
                                   "volumeAttributesClassName"], ["selector": labelSelector, "resources": fields(["limits", "requests"])])

    /// An object: apiVersion, kind, metadata, and its own fields.
    static func kind(_ names: [String], _ nested: [String: FieldSchema] = [:]) -> FieldSchema {
        fields(["apiVersion", "kind"] + names, nested.merging(["metadata": objectMeta]) { a, _ in a })
    }

    static let rolling = ["rollingUpdate": fields(["maxUnavailable", "maxSurge", "partition"])]

    static let jobSpec = fields(
        ["parallelism", "completions", "activeDeadlineSeconds", "selector", "manualSelector", "backoffLimit",
         "ttlSecondsAfterFinished", "completionMode", "suspend", "podReplacementPolicy", "podFailurePolicy",
         "backoffLimitPerIndex", "maxFailedIndexes", "successPolicy", "managedBy"], ["template": podTemplate])

    /// Kind → schema, for every kind kemu stores or answers.
    static let kinds: [String: FieldSchema] = {
        var kinds: [String: FieldSchema] = [
            "Pod": kind(["status"], ["spec": podSpec]),
            "Service": kind(["status"], ["spec": fields(
                ["selector", "clusterIP", "clusterIPs", "type", "externalIPs", "sessionAffinity", "loadBalancerIP", "loadBalancerSourceRanges",
                 "externalName", "externalTrafficPolicy", "healthCheckNodePort", "publishNotReadyAddresses", "sessionAffinityConfig",
                 "ipFamilies", "ipFamilyPolicy", "allocateLoadBalancerNodePorts", "loadBalancerClass", "internalTrafficPolicy",
                 "trafficDistribution"],
                ["ports": .list(fields(["name", "protocol", "appProtocol", "port", "targetPort", "nodePort"]))])]),
            "Deployment": kind(["status"], ["spec": fields(
                ["replicas", "minReadySeconds", "revisionHistoryLimit", "paused", "progressDeadlineSeconds"],
                ["selector": labelSelector, "template": podTemplate, "strategy": fields(["type"], rolling)])]),
            "ReplicaSet": kind(["status"], ["spec": fields(["replicas", "minReadySeconds"], ["selector": labelSelector, "template": podTemplate])]),
            "ReplicationController": kind(["status"], ["spec": fields(["replicas", "minReadySeconds", "selector"], ["template": podTemplate])]),
            "StatefulSet": kind(["status"], ["spec": fields(
                ["replicas", "serviceName", "podManagementPolicy", "revisionHistoryLimit", "minReadySeconds"],
                ["selector": labelSelector, "template": podTemplate,
                 "volumeClaimTemplates": .list(fields(["apiVersion", "kind", "status"], ["metadata": objectMeta, "spec": claimSpec])),
                 "updateStrategy": fields(["type"], rolling), "persistentVolumeClaimRetentionPolicy": fields(["whenDeleted", "whenScaled"]),
                 "ordinals": fields(["start"])])]),
            "PersistentVolumeClaim": kind(["status"], ["spec": claimSpec]),
            "Namespace": kind(["status"], ["spec": fields(["finalizers"])]),
            "Node": kind(["status"], ["spec": fields(["podCIDR", "podCIDRs", "providerID", "unschedulable", "configSource", "externalID"],
                                                     ["taints": .list(fields(["key", "value", "effect", "timeAdded"]))])]),
            "ConfigMap": kind(["data", "binaryData", "immutable"]),
            "Secret": kind(["data", "stringData", "type", "immutable"]),
            "ResourceQuota": kind(["spec", "status"]),
            "LimitRange": kind([], ["spec": fields([], ["limits": .list(fields(["type", "max", "min", "default", "defaultRequest", "maxLimitRequestRatio"]))])]),
            "Job": kind(["status"], ["spec": jobSpec]),
            "CronJob": kind(["status"], ["spec": fields(
                ["schedule", "timeZone", "startingDeadlineSeconds", "concurrencyPolicy", "suspend", "successfulJobsHistoryLimit",
                 "failedJobsHistoryLimit"], ["jobTemplate": fields([], ["metadata": objectMeta, "spec": jobSpec])])]),
            "DaemonSet": kind(["status"], ["spec": fields(
                ["minReadySeconds", "revisionHistoryLimit"],
                ["selector": labelSelector, "template": podTemplate, "updateStrategy": fields(["type"], rolling)])]),
            "Ingress": kind(["spec", "status"]),
            "IngressClass": kind(["spec"]),
            "NetworkPolicy": kind(["spec"]),
            "PodDisruptionBudget": kind(["spec", "status"]),
            "PriorityClass": kind(["value", "globalDefault", "description", "preemptionPolicy"]),
            "ServiceAccount": kind(["secrets", "imagePullSecrets", "automountServiceAccountToken"]),
            "Endpoints": kind(["subsets"]),
            "EndpointSlice": kind(["addressType", "endpoints", "ports"]),
            "ControllerRevision": kind(["data", "revision"]),
            "Event": kind(["involvedObject", "reason", "message", "source", "firstTimestamp", "lastTimestamp", "count", "type", "eventTime",
                           "series", "action", "related", "reportingComponent", "reportingInstance"]),
            // events.k8s.io/v1's names for the same object (EventsV1), for its OpenAPI document.
            "Event.events.k8s.io": kind(["regarding", "related", "note", "reason", "type", "action", "eventTime", "series",
                                         "reportingController", "reportingInstance", "deprecatedSource", "deprecatedFirstTimestamp",
                                         "deprecatedLastTimestamp", "deprecatedCount"]),
            "Role": kind(["rules"]),
            "ClusterRole": kind(["rules", "aggregationRule"]),
            "RoleBinding": kind(["subjects", "roleRef"]),
            "ClusterRoleBinding": kind(["subjects", "roleRef"]),
            "Fault": kind(["spec", "status"]),
            "AuthorizationPolicy": kind(["status"], ["spec": fields(["selector", "targetRef", "targetRefs", "action", "provider", "rules"])]),
            "PeerAuthentication": kind(["status"], ["spec": fields(["selector", "mtls", "portLevelMtls"])]),
            "TCPRoute": kind(["status"], ["spec": fields(["parentRefs", "rules"])]),
            "HTTPRoute": kind(["status"], ["spec": fields(["parentRefs", "hostnames", "rules"])]),
            "CertificateSigningRequest": kind(["status"], ["spec": fields(["request", "signerName", "expirationSeconds", "usages", "username",
                                                                          "uid", "groups", "extra"])]),
            "Lease": kind([], ["spec": fields(["holderIdentity", "leaseDurationSeconds", "acquireTime", "renewTime", "leaseTransitions",
                                               "strategy", "preferredHolder"])]),
        ]
        for review in ["SelfSubjectAccessReview", "SelfSubjectRulesReview", "SubjectAccessReview", "LocalSubjectAccessReview", "SelfSubjectReview"] {
            kinds[review] = kind(["spec", "status"])
        }
        return kinds
    }()
}
