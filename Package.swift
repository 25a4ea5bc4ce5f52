// swift-tools-version: 6.0
import PackageDescription

let settings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "ProfileVault",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "profilectl", targets: ["profilectl"]),
        .library(name: "ProfileVault", targets: ["ProfileVault"]),
    ],
    dependencies: [
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        // The console's HTML templates (issue 21), compiled into the binary.
        .package(url: "https://github.com/hummingbird-project/swift-mustache", from: "2.1.1"),
    ],
    targets: [
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        // PKCS#11 key custody (issue 22): the standard pkcs11.h (p11-kit's); the module itself
        // (an HSM's or a cloud KMS's library) is loaded at run time with dlopen.
        .systemLibrary(
            name: "CPKCS11",
            pkgConfig: "p11-kit-1",
            providers: [.apt(["libp11-kit-dev"])]
        ),
        .target(name: "VaultCrypto", dependencies: ["COpenSSL", "CPKCS11"], swiftSettings: settings),
        // The value types every layer and every interface shares: errors and JSON documents.
        .target(name: "VaultValues", swiftSettings: settings),
        .target(name: "VaultPolicy", dependencies: ["Yams"], swiftSettings: settings),
        .target(name: "VaultAudit", dependencies: ["VaultValues", "VaultCrypto"], swiftSettings: settings),
        .target(name: "DifferentialPrivacy", dependencies: ["VaultCrypto"], swiftSettings: settings),
        // Models see the data only through DP releases: their module cannot import the store.
        .target(name: "PrivateModels", dependencies: ["DifferentialPrivacy"], swiftSettings: settings),
        .target(
            name: "VaultStore",
            dependencies: [
                "VaultValues", "VaultCrypto", "VaultPolicy", "VaultAudit", "DifferentialPrivacy",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: settings
        ),
        // The PostgreSQL engine's cluster-critical pieces (issue 18 §2): location, pool,
        // migrations and roles, the cluster-wide audit chain and budget ledger.
        .target(
            name: "VaultPostgres",
            dependencies: [
                "VaultValues", "VaultCrypto", "VaultPolicy", "VaultAudit", "DifferentialPrivacy",
                // The validation and sealing of records, shared with the SQLite engine (package access).
                "VaultStore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: settings
        ),
        .target(
            name: "ProfileVault",
            dependencies: [
                "VaultValues", "VaultCrypto", "VaultPolicy", "VaultStore", "VaultAudit", "VaultPostgres", "DifferentialPrivacy", "PrivateModels", "Yams",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: settings
        ),
        // The HTTP service (SPEC §8): a thin shell over ProfileVault, like the CLI.
        .target(
            name: "VaultServer",
            dependencies: [
                "ProfileVault", "VaultValues", "VaultPolicy", "DifferentialPrivacy",
                // Yams: `serve --config FILE`.
                "Yams",
                .product(name: "Hummingbird", package: "hummingbird"),
                // TLS (HTTP/1.1 and HTTP/2 by ALPN) for `serve --tls-cert --tls-key`, on swift-nio-ssl.
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HummingbirdHTTP2", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Mustache", package: "swift-mustache"),
            ],
            swiftSettings: settings
        ),
        .executableTarget(
            name: "profilectl",
            dependencies: [
                "ProfileVault", "VaultValues", "VaultServer", "VaultPolicy", "DifferentialPrivacy", "PrivateModels",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: settings
        ),
        .executableTarget(
            name: "pvbench",
            dependencies: [
                "ProfileVault", "VaultValues", "VaultPolicy", "DifferentialPrivacy", "PrivateModels",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: settings
        ),
        // The engine conformance suite's population and request generators, shared by the
        // SQLite and PostgreSQL tests (not shipped: no product names it).
        .target(
            name: "EngineConformanceSupport",
            dependencies: ["VaultStore", "VaultPolicy", "VaultAudit", "VaultCrypto", "DifferentialPrivacy"],
            path: "Tests/EngineConformanceSupport",
            swiftSettings: settings
        ),
        // SoftHSM2 tokens for the key-custody tests (not shipped: no product names it).
        .target(name: "SoftHSMSupport", dependencies: ["VaultCrypto"], path: "Tests/SoftHSMSupport", swiftSettings: settings),
        .testTarget(name: "VaultCryptoTests", dependencies: ["VaultCrypto", "SoftHSMSupport"], swiftSettings: settings),
        .testTarget(name: "VaultPolicyTests", dependencies: ["VaultPolicy"], swiftSettings: settings),
        .testTarget(name: "VaultAuditTests", dependencies: ["VaultAudit", "VaultCrypto"], swiftSettings: settings),
        .testTarget(name: "PrivateModelsTests", dependencies: ["PrivateModels", "DifferentialPrivacy"], swiftSettings: settings),
        .testTarget(name: "DifferentialPrivacyTests", dependencies: ["DifferentialPrivacy", "VaultCrypto"], swiftSettings: settings),
        .testTarget(
            name: "VaultStoreTests",
            dependencies: ["VaultStore", "VaultCrypto", "VaultPolicy", "VaultAudit", "EngineConformanceSupport", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: settings
        ),
        .testTarget(
            name: "VaultServerTests",
            dependencies: [
                "VaultServer", "ProfileVault", "VaultStore", "VaultCrypto", "VaultAudit", "SoftHSMSupport",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: settings
        ),
        .testTarget(
            name: "VaultPostgresTests",
            // VaultStore: both engines must count delta alike and hold the same profiles.
            dependencies: [
                "VaultPostgres", "VaultAudit", "VaultCrypto", "DifferentialPrivacy", "VaultStore", "VaultPolicy", "VaultValues", "EngineConformanceSupport",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                // GRDB: an audit chain copied into a SQLite store must export byte for byte alike.
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: settings
        ),
        .testTarget(
            name: "ProfileVaultTests",
            dependencies: ["ProfileVault", "VaultStore", "VaultPolicy", "VaultCrypto", "VaultAudit", "DifferentialPrivacy", "PrivateModels", "SoftHSMSupport"],
            swiftSettings: settings
        ),
    ]
)
