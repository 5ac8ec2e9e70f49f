// swift-tools-version: 6.1
import PackageDescription

import Foundation

/// One settings list for every Swift target: Swift 6 language mode comes from the tools version;
/// `ExistentialAny` makes every protocol-typed value say `any`. `make check` sets KEMU_STRICT to
/// turn kemu's own warnings (not its dependencies') into errors.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
] + (ProcessInfo.processInfo.environment["KEMU_STRICT"] != nil ? [.unsafeFlags(["-warnings-as-errors"])] : [])

let package = Package(
    name: "kemu",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "kemu", targets: ["kemu"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket", from: "2.8.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-http2", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        // libnl-3 / libnl-route-3 headers (apt: libnl-3-dev libnl-route-3-dev).
        .systemLibrary(
            name: "CNetlink",
            pkgConfig: "libnl-route-3.0",
            providers: [.apt(["libnl-3-dev", "libnl-route-3-dev"])]
        ),
        // libnftables, nft's own library (apt: libnftables-dev).
        .systemLibrary(
            name: "CNftables",
            pkgConfig: "libnftables",
            providers: [.apt(["libnftables-dev"])]
        ),
        // What Glibc hides from Swift, and everything that must run between fork and exec.
        .target(name: "CKemuShim", linkerSettings: [.linkedLibrary("z")]),
        // IPv4 addresses and networks: pure Swift, no imports, shared by every layer.
        .target(name: "KemuIP", swiftSettings: swiftSettings),
        .target(
            name: "KemuSystem",
            dependencies: ["CKemuShim", "KemuIP"],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        // Kubernetes objects as JSON trees, selectors, validation: no I/O, no dependencies.
        .target(name: "KemuAPI", exclude: ["README.md"], swiftSettings: swiftSettings),
        .target(name: "KemuStore", dependencies: ["KemuAPI"], exclude: ["README.md"], swiftSettings: swiftSettings),
        .target(
            name: "KemuControllers",
            dependencies: ["KemuAPI", "KemuStore", .product(name: "Logging", package: "swift-log")],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        // The cluster CA, serving and client certificates, bearer tokens.
        .target(
            name: "KemuPKI",
            dependencies: [
                "KemuAPI", "KemuSystem",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "KemuAPIServer",
            dependencies: [
                "CKemuShim", "KemuAPI", "KemuIP", "KemuPKI", "KemuStore", "KemuSystem",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        // The API client and informer controllers, node agents and proxies use.
        .target(
            name: "KemuClient",
            dependencies: [
                "KemuAPI",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        // The node agent (kemu's kubelet): Node registration, pods as processes in sandboxes.
        .target(
            name: "KemuAgent",
            dependencies: [
                "KemuAPI", "KemuClient", "KemuNetwork", "KemuSystem",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        // The node proxy: Services and EndpointSlices in, listeners and an epoll + splice byte path out.
        .target(
            name: "KemuProxy",
            dependencies: [
                "KemuAPI", "KemuClient", "KemuIP", "KemuNetfilter", "KemuNetlink", "KemuSystem",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        // The mesh on the node proxies: workload identities (SVIDs from the mesh CA), tunnels
        // between proxies (HTTP/2 CONNECT over mutual TLS, HBONE-style) for the engine's dials.
        .target(
            name: "KemuMesh",
            dependencies: [
                "KemuAPI", "KemuClient", "KemuIP", "KemuNetfilter", "KemuPKI", "KemuProxy", "KemuSystem",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        // NetworkPolicy: compiled against pods and namespaces, rendered to each node's
        // nftables rules, enforced by a per-node follower, evaluated by `kemu policy trace`.
        .target(
            name: "KemuPolicy",
            dependencies: [
                "KemuAPI", "KemuClient", "KemuIP", "KemuNetfilter", "KemuSystem",
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        // The cluster DNS responder each node runs.
        .target(
            name: "KemuDNS",
            dependencies: [
                "KemuAPI", "KemuClient", "KemuIP", "KemuSystem",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "KemuNetlink",
            dependencies: ["CNetlink", "KemuIP", "KemuSystem"],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        // nftables rulesets in the node's namespace, applied as one transaction each.
        .target(
            name: "KemuNetfilter",
            dependencies: ["CNftables", "KemuSystem"],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "KemuNetwork",
            dependencies: [
                "KemuIP", "KemuNetlink", "KemuSystem",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        // A whole cluster: bringing it up and down, daemon supervision, control-plane and node
        // daemon assembly, the fabric relay, pod link shaping, which cluster a command means.
        .target(
            name: "KemuCluster",
            dependencies: [
                "KemuAgent", "KemuAPI", "KemuAPIServer", "KemuClient", "KemuControllers", "KemuDNS", "KemuIP", "KemuNetlink",
                "KemuMesh", "KemuNetwork", "KemuPKI", "KemuPolicy", "KemuProxy", "KemuStore", "KemuSystem",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        // The failover lab: chaos verbs, experiments (file, run, report), the load generator and
        // the echo workload it measures.
        .target(
            name: "KemuLab",
            dependencies: [
                "KemuAgent", "KemuAPI", "KemuClient", "KemuCluster", "KemuIP", "KemuNetwork", "KemuSystem",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "Yams", package: "Yams"),
            ],
            exclude: ["README.md"],
            swiftSettings: swiftSettings
        ),
        // The one executable: argument parsing, each command a thin call into a library.
        .executableTarget(
            name: "kemu",
            dependencies: [
                "KemuAPI", "KemuAPIServer", "KemuCluster", "KemuIP", "KemuLab", "KemuNetwork", "KemuPolicy", "KemuProxy", "KemuSystem",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        // The program of image kemu/echo: the C library only, so a pod costs the machine little.
        .executableTarget(
            name: "kemu-echo",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "kemu-bench",
            dependencies: ["KemuAPI", "KemuClient", "KemuPKI", "KemuStore", "KemuIP", "KemuNetwork", "KemuNetlink", "KemuSystem"],
            swiftSettings: swiftSettings
        ),
        // What the API-side test targets share: a real `kemu server` process and fixtures.
        .target(
            name: "KemuTestSupport",
            dependencies: [
                "KemuAPI", "KemuClient", "KemuPKI",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Tests/KemuTestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "KemuNetworkTests",
            dependencies: ["KemuIP", "KemuNetwork", "KemuNetlink", "KemuSystem"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "KemuProxyTests",
            dependencies: ["KemuAPI", "KemuClient", "KemuIP", "KemuProxy", "KemuSystem", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "KemuMeshTests",
            dependencies: [
                "KemuAPI", "KemuClient", "KemuIP", "KemuMesh", "KemuProxy", "KemuSystem",
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOHPACK", package: "swift-nio-http2"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "KemuPolicyTests",
            dependencies: ["KemuAPI", "KemuIP", "KemuPolicy"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "KemuIPTests",
            dependencies: ["KemuIP"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "KemuSystemTests",
            dependencies: ["KemuIP", "KemuSystem"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "KemuPKITests",
            dependencies: ["KemuAPI", "KemuPKI", "KemuSystem", .product(name: "X509", package: "swift-certificates"),
                           .product(name: "SwiftASN1", package: "swift-asn1"), .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "KemuAgentTests",
            dependencies: ["KemuAgent", "KemuAPI", "KemuSystem"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "KemuDNSTests",
            dependencies: ["KemuAPI", "KemuClient", "KemuDNS", "KemuIP", "KemuSystem", "KemuTestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "KemuAPITests",
            dependencies: ["KemuAPI"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "KemuStoreTests",
            dependencies: ["KemuAPI", "KemuStore", "KemuTestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "KemuControllersTests",
            dependencies: ["KemuAPI", "KemuControllers", "KemuPKI", "KemuStore", "KemuTestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "KemuAPIServerTests",
            dependencies: [
                "KemuAPI", "KemuAPIServer", "KemuClient", "KemuIP", "KemuPKI", "KemuStore", "KemuTestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "KemuClientTests",
            dependencies: ["KemuAPI", "KemuClient", "KemuTestSupport"],
            swiftSettings: swiftSettings
        ),
        // kubectl and the python client against a real `kemu server`.
        .testTarget(
            name: "KemuIntegrationTests",
            dependencies: [
                "KemuAPI", "KemuClient", "KemuControllers", "KemuStore", "KemuIP", "KemuAPIServer", "KemuTestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "KemuLabTests",
            dependencies: ["KemuAPI", "KemuCluster", "KemuIP", "KemuLab", "KemuSystem"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "KemuClusterTests",
            dependencies: ["KemuAPI", "KemuCluster", "KemuSystem"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "KemuRootTests",
            dependencies: ["KemuIP", "KemuNetwork", "KemuNetlink", "KemuSystem"],
            swiftSettings: swiftSettings
        ),
    ]
)
