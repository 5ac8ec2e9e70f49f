import KemuSystem
import KemuIP
import Yams

extension ClusterConfig {
    /// Parses YAML, rejecting unknown keys (a typo'd key would otherwise silently fall back to a
    /// default), then validates. Every error names its field.
    public static func parse(yaml text: String, source: String = "cluster.yaml") throws -> ClusterConfig {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            throw ConfigErrors(source: source, errors: [ConfigError("", "not valid YAML: \(error)")])
        }
        var config = ClusterConfig()
        var errors: [ConfigError] = []
        if let root {
            var top = Fields(root, path: "", errors: &errors)
            if let name = top.string("name") { config.name = name }
            if let nodes = top.node("nodes") {
                config.nodes = Self.nodeNames(nodes, errors: &errors)
            }
            if let zones = top.node("zones") { config.zones = Self.zones(zones, errors: &errors) }
            if let mesh = top.string("mesh") {
                if ["labelled", "cluster"].contains(mesh) {
                    config.mesh = mesh
                } else {
                    errors.append(ConfigError("mesh", "\"\(mesh)\" is not labelled (namespaces labelled kemu.dev/mesh=enabled) or cluster (every namespace)"))
                }
            }
            if let networkNode = top.node("network") {
                var network = Fields(networkNode, path: "network", errors: &errors)
                let n = config.network
                config.network.fabricCIDR = network.parse("fabricCIDR", "an IPv4 CIDR such as 172.31.0.0/24", IPv4Network.init) ?? n.fabricCIDR
                config.network.podCIDR = network.parse("podCIDR", "an IPv4 CIDR such as 10.244.0.0/16", IPv4Network.init) ?? n.podCIDR
                config.network.nodePodPrefixLength = network.int("nodePodPrefixLength") ?? n.nodePodPrefixLength
                config.network.serviceCIDR = network.parse("serviceCIDR", "an IPv4 CIDR such as 10.96.0.0/16", IPv4Network.init) ?? n.serviceCIDR
                config.network.nodePortRange = network.parse("nodePortRange", "a port range such as 30000-32767", PortRange.init) ?? n.nodePortRange
                config.network.loadBalancerPool = network.parse("loadBalancerPool", "an IPv4 CIDR such as 172.31.1.0/24", IPv4Network.init) ?? n.loadBalancerPool
                config.network.clusterDomain = network.string("clusterDomain") ?? n.clusterDomain
                network.rejectUnknown(errors: &errors)
            }
            if let resourcesNode = top.node("nodeResources") {
                var resources = Fields(resourcesNode, path: "nodeResources", errors: &errors)
                let r = config.nodeResources
                config.nodeResources.cpu = resources.string("cpu") ?? r.cpu
                config.nodeResources.memory = resources.string("memory") ?? r.memory
                config.nodeResources.pods = resources.int("pods") ?? r.pods
                resources.rejectUnknown(errors: &errors)
            }
            if let lifecycleNode = top.node("controlPlane") {
                var lifecycle = Fields(lifecycleNode, path: "controlPlane", errors: &errors)
                var settings = ControlPlaneConfig()
                let expected = "a duration such as 40s, 5m or 1.5 (seconds)"
                settings.nodeGracePeriod = lifecycle.parse("nodeGracePeriod", expected, Self.seconds) ?? settings.nodeGracePeriod
                settings.podEvictionDelay = lifecycle.parse("podEvictionDelay", expected, Self.seconds) ?? settings.podEvictionDelay
                lifecycle.rejectUnknown(errors: &errors)
                config.controlPlane = settings
            }
            top.rejectUnknown(errors: &errors)
        }
        if errors.isEmpty { errors = config.validate() }
        guard errors.isEmpty else { throw ConfigErrors(source: source, errors: errors) }
        return config
    }

    /// `40s`, `5m`, `1h`, `500ms` or a bare number of seconds; nil for anything else (negative,
    /// not finite, no number).
    static func seconds(_ text: String) -> Double? {
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("", 1)]
        guard let (suffix, scale) = units.first(where: { text.hasSuffix($0.0) }),
              let number = Double(text.dropLast(suffix.count)), number.isFinite, number >= 0,
              text.dropLast(suffix.count).allSatisfy({ $0.isNumber || $0 == "." }) else { return nil }
        return number * scale
    }

    /// `zones: {zone-a: [node-1, node-2]}` → node → zone.
    private static func zones(_ node: Node, errors: inout [ConfigError]) -> [String: String] {
        guard let mapping = node.mapping else {
            errors.append(ConfigError("zones", "must map zone names to lists of nodes, as zones: {zone-a: [node-1, node-2]}"))
            return [:]
        }
        var out: [String: String] = [:]
        for (key, value) in mapping {
            let zone = key.scalar?.string ?? ""
            guard let members = value.sequence else {
                errors.append(ConfigError("zones.\(zone)", "must be a list of node names"))
                continue
            }
            for (i, member) in members.enumerated() {
                guard let name = member.scalar?.string else {
                    errors.append(ConfigError("zones.\(zone)[\(i)]", "must be a node name"))
                    continue
                }
                if let other = out[name] { errors.append(ConfigError("zones.\(zone)[\(i)]", "node \"\(name)\" is already in zone \(other)")) }
                out[name] = zone
            }
        }
        return out
    }

    /// `nodes: 3` (node-1 … node-3) or `nodes: [a, b]`.
    private static func nodeNames(_ node: Node, errors: inout [ConfigError]) -> [String] {
        if let scalar = node.scalar {
            guard let count = Int(scalar.string), count >= 1 else {
                errors.append(ConfigError("nodes", "\"\(scalar.string)\" is neither a node count (1 or more) nor a list of names"))
                return []
            }
            return (1...count).map { "node-\($0)" }
        }
        if let sequence = node.sequence {
            return sequence.enumerated().compactMap { index, item in
                guard let name = item.scalar?.string else {
                    errors.append(ConfigError("nodes[\(index)]", "must be a node name"))
                    return nil
                }
                return name
            }
        }
        errors.append(ConfigError("nodes", "must be a node count or a list of node names"))
        return []
    }
}

/// Reads the keys of one YAML mapping and remembers which were used, so the rest can be reported.
private struct Fields {
    let mapping: Node.Mapping?
    let path: String
    var used: Set<String> = []

    init(_ node: Node, path: String, errors: inout [ConfigError]) {
        self.path = path
        mapping = node.mapping
        if mapping == nil, node.scalar?.string.isEmpty != true {
            errors.append(ConfigError(path, "must be a mapping of keys to values"))
        }
    }

    func field(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    mutating func node(_ key: String) -> Node? {
        used.insert(key)
        return mapping?[key]
    }

    mutating func string(_ key: String) -> String? { node(key)?.scalar?.string }

    mutating func int(_ key: String) -> Int? {
        guard let text = string(key) else { return nil }
        guard let value = Int(text) else {
            pendingErrors.append(ConfigError(field(key), "\"\(text)\" is not a whole number"))
            return nil
        }
        return value
    }

    mutating func parse<T>(_ key: String, _ expected: String, _ make: (String) -> T?) -> T? {
        guard let text = string(key) else { return nil }
        guard let value = make(text) else {
            pendingErrors.append(ConfigError(field(key), "\"\(text)\" is not \(expected)"))
            return nil
        }
        return value
    }

    var pendingErrors: [ConfigError] = []

    mutating func rejectUnknown(errors: inout [ConfigError]) {
        errors += pendingErrors
        for key in mapping?.keys.compactMap({ $0.scalar?.string }) ?? [] where !used.contains(key) {
            errors.append(ConfigError(field(key), "unknown key"))
        }
    }
}

extension ClusterConfig {
    /// The config in `file` (nil: the defaults), renamed `name` if given; errors name the file or
    /// `--cluster`.
    public static func load(file: String?, name: String?) throws -> ClusterConfig {
        var config = ClusterConfig()
        if let file {
            let text: String
            do { text = try FileSystem.readFile(file) } catch {
                throw KemuError(.notFound, "cannot read cluster config \(file)", cause: error)
            }
            config = try ClusterConfig.parse(yaml: text, source: file)
        }
        if let name {
            config.name = name
            let errors = config.validate()
            if !errors.isEmpty { throw ConfigErrors(source: "--cluster", errors: errors) }
        }
        return config
    }
}
