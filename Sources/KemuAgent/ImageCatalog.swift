import Foundation
import KemuSystem
import Yams

/// `configs/images.yaml`: what program each container image stands for.
public struct ImageCatalog: Sendable, Equatable {
    public struct Image: Sendable, Equatable {
        public var command: [String]
        public var args: [String]
        /// The image's user (Dockerfile `USER`): uid, and gid if given; nil: `ImageCatalog.defaultUser`.
        public var user: (uid: UInt32, gid: UInt32?)?

        public init(command: [String], args: [String], user: (uid: UInt32, gid: UInt32?)? = nil) {
            self.command = command
            self.args = args
            self.user = user
        }

        public static func == (a: Image, b: Image) -> Bool {
            a.command == b.command && a.args == b.args && a.user?.uid == b.user?.uid && a.user?.gid == b.user?.gid
        }
    }

    /// Who a container runs as when neither its image nor its securityContext says: `nobody`,
    /// never root.
    public static let defaultUser: (uid: UInt32, gid: UInt32) = (65534, 65534)

    public var images: [String: Image]
    /// What `kemu` in a command means: the running kemu binary.
    public var kemuExecutable: String

    public init(images: [String: Image], kemuExecutable: String) {
        self.images = images
        self.kemuExecutable = kemuExecutable
    }

    public static func load(path: String, kemuExecutable: String) throws -> ImageCatalog {
        let text: String
        do { text = try FileSystem.readFile(path) } catch {
            throw KemuError(.notFound, "image catalog \(path) cannot be read", cause: error)
        }
        return try parse(text, source: path, kemuExecutable: kemuExecutable)
    }

    public static func parse(_ text: String, source: String, kemuExecutable: String) throws -> ImageCatalog {
        let root: Any?
        do { root = try Yams.load(yaml: text) } catch {
            throw KemuError(.invalidArgument, "\(source) is not valid YAML: \(error)")
        }
        guard let entries = root as? [String: Any] else { throw KemuError(.invalidArgument, "\(source): expected a mapping of image → {command, args}") }
        var images: [String: Image] = [:]
        for (name, value) in entries {
            guard let fields = value as? [String: Any] else { throw KemuError(.invalidArgument, "\(source): \(name): expected {command, args}") }
            for key in fields.keys where !["command", "args", "user"].contains(key) {
                throw KemuError(.invalidArgument, "\(source): \(name).\(key): unknown field (command, args, user)")
            }
            func strings(_ key: String) throws -> [String] {
                guard let raw = fields[key] else { return [] }
                guard let list = raw as? [Any] else { throw KemuError(.invalidArgument, "\(source): \(name).\(key): expected a list") }
                return list.map { "\($0)" }
            }
            var user: (uid: UInt32, gid: UInt32?)?
            if let raw = fields["user"] {
                let parts = "\(raw)".split(separator: ":", omittingEmptySubsequences: false)
                guard (1...2).contains(parts.count), let uid = UInt32(parts[0]), uid <= Int32.max,
                      parts.count == 1 || (UInt32(parts[1]).map { $0 <= Int32.max } ?? false) else {
                    throw KemuError(.invalidArgument, "\(source): \(name).user: \"\(raw)\" is not UID or UID:GID (numbers up to 2147483647)")
                }
                user = (uid, parts.count == 2 ? UInt32(parts[1]) : nil)
            }
            let image = Image(command: try strings("command"), args: try strings("args"), user: user)
            if image.command.isEmpty && image.args.isEmpty {
                throw KemuError(.invalidArgument, "\(source): \(name): needs a command (its entrypoint) or args (its default arguments)")
            }
            images[name] = image
        }
        return ImageCatalog(images: images, kemuExecutable: kemuExecutable)
    }

    /// The image's entry, by exact name or without registry, `library/` and tag.
    public func lookup(_ reference: String) -> Image? {
        if let image = images[reference] { return image }
        var name = Substring(reference)
        if let slash = name.firstIndex(of: "/"), name[..<slash].contains(".") || name[..<slash].contains(":") {
            name = name[name.index(after: slash)...]  // a registry host
        }
        if name.hasPrefix("library/") { name = name.dropFirst("library/".count) }
        if let image = images[String(name)] { return image }
        if let colon = name.lastIndex(of: ":"), !name[colon...].contains("/") { return images[String(name[..<colon])] }
        return nil
    }

    /// argv for a container: Kubernetes' command/args rules over the image's entry, `kemu`
    /// resolved, the program found in PATH. Throws with the reason a pod status shows.
    public func argv(image: String, command: [String]?, args: [String]?, path: String) throws -> [String] {
        var argv: [String]
        if let command, !command.isEmpty {
            argv = command + (args ?? [])
        } else {
            guard let entry = lookup(image) else {
                throw ContainerError(reason: "ErrImagePull",
                                     message: "image \"\(image)\" is not in configs/images.yaml (known: \(images.keys.sorted().joined(separator: ", "))); give the container a command instead")
            }
            argv = entry.command + (args ?? entry.args)
            guard !argv.isEmpty else {
                throw ContainerError(reason: "RunContainerError", message: "failed to create containerd task: no command specified (image \"\(image)\" has no entrypoint and the container no command or args)")
            }
            guard Self.which(ownProgram(argv[0]) ?? argv[0], path: path) != nil else {
                throw ContainerError(reason: "ErrImagePull", message: "image \"\(image)\" runs \(argv[0]), which is not installed on this machine")
            }
        }
        if let own = ownProgram(argv[0]) { argv[0] = own }
        guard Self.which(argv[0], path: path) != nil else {
            throw ContainerError(reason: "RunContainerError",
                                 message: "exec: \"\(argv[0])\": executable file not found in $PATH")
        }
        return argv
    }

    /// kemu's own programs by their bare names: `kemu` (this binary) and `kemu-echo` (beside it).
    func ownProgram(_ name: String) -> String? {
        switch name {
        case "kemu": kemuExecutable
        case "kemu-echo": (kemuExecutable as NSString).deletingLastPathComponent + "/kemu-echo"
        default: nil
        }
    }

    /// The executable `program` names: itself when it has a '/', else the first in PATH.
    static func which(_ program: String, path: String) -> String? {
        if program.contains("/") { return access(program, X_OK) == 0 ? program : nil }
        for directory in path.split(separator: ":") where access("\(directory)/\(program)", X_OK) == 0 {
            return "\(directory)/\(program)"
        }
        return nil
    }
}

/// Why a container cannot start, in the words a pod status uses (reason, message).
public struct ContainerError: Error, CustomStringConvertible {
    public var reason: String
    public var message: String
    public var description: String { "\(reason): \(message)" }
}
