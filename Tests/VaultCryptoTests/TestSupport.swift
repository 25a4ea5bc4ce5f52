import Foundation
import VaultCrypto

func hexBytes(_ s: String) -> [UInt8] {
    precondition(s.count % 2 == 0, "odd hex length")
    var out: [UInt8] = []
    out.reserveCapacity(s.count / 2)
    var it = s.utf8.makeIterator()
    func nibble(_ c: UInt8) -> UInt8 {
        switch c {
        case 48...57: return c - 48
        case 97...102: return c - 87
        case 65...70: return c - 55
        default: preconditionFailure("bad hex digit")
        }
    }
    while let hi = it.next(), let lo = it.next() { out.append(nibble(hi) << 4 | nibble(lo)) }
    return out
}

func hexString(_ bytes: [UInt8]) -> String {
    bytes.map { String(format: "%02x", $0) }.joined()
}

/// A fresh temporary directory for one test.
func makeTemporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("vaultcrypto-tests-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

func posixMode(_ path: String) throws -> Int {
    let attributes = try FileManager.default.attributesOfItem(atPath: path)
    return (attributes[.posixPermissions] as? NSNumber)?.intValue ?? -1
}

/// Finds `../shared/data/wycheproof` (the vectors are not part of this repository).
///
/// Looks at `$PROFILEVAULT_SHARED/data/wycheproof`, then relative to this source file's package
/// root (both the path as compiled and with symlinks resolved, since a development package may
/// link these sources in from elsewhere). Nil when the folder is absent: the vector tests then
/// print a skip message and pass.
func wycheproofDirectory(filePath: String = #filePath) -> URL? {
    var candidates: [URL] = []
    if let shared = ProcessInfo.processInfo.environment["PROFILEVAULT_SHARED"], !shared.isEmpty {
        candidates.append(URL(fileURLWithPath: shared).appendingPathComponent("data/wycheproof"))
    }
    let file = URL(fileURLWithPath: filePath)
    for source in [file, file.resolvingSymlinksInPath()] {
        // <root>/Tests/VaultCryptoTests/<file>.swift -> <root>/../shared/data/wycheproof
        let root = source.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        candidates.append(root.deletingLastPathComponent().appendingPathComponent("shared/data/wycheproof"))
    }
    return candidates.first {
        FileManager.default.fileExists(atPath: $0.appendingPathComponent("aes_gcm_test.json").path)
    }
}

/// Loads one Wycheproof file, or prints why it is skipped and returns nil.
func loadWycheproof<T: Decodable>(_ name: String, as type: T.Type, filePath: String = #filePath) throws -> T? {
    guard let directory = wycheproofDirectory(filePath: filePath) else {
        print("SKIP Wycheproof \(name): vectors not found (looked in $PROFILEVAULT_SHARED/data/wycheproof and ../shared/data/wycheproof next to the package)")
        return nil
    }
    let url = directory.appendingPathComponent(name)
    guard FileManager.default.fileExists(atPath: url.path) else {
        print("SKIP Wycheproof \(name): \(url.path) is missing")
        return nil
    }
    return try JSONDecoder().decode(T.self, from: Data(contentsOf: url))
}
