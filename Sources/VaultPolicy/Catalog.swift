#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A catalog the policy declares (`catalogs: { products: catalogs/products.tsv }` in
/// policy.yaml): a public list of items that training jobs may name with `items_from: products`.
///
/// Jobs name catalogs, never paths, so a job cannot make `train` read an arbitrary file (the
/// keyring, say) into a model artifact's `items`. The path is relative to the policy directory
/// and may not leave it (no absolute path, no `..`, no symbolic link leading outside).
public struct CatalogDeclaration: Sendable, Equatable {
    /// The catalog's name (the key under `catalogs:`).
    public let name: String
    /// The path as written, relative to the policy directory.
    public let path: String
    /// The line of the declaration in policy.yaml.
    public let line: Int

    public init(name: String, path: String, line: Int) {
        self.name = name
        self.path = path
        self.line = line
    }
}

/// Where a declared catalog's file is, and what it may hold.
public enum CatalogFile {
    /// The most items a catalog may list.
    public static let maximumItems = 1_000_000
    /// The largest catalog file read (items and their descriptions).
    public static let maximumBytes = 256 << 20
    /// The longest line (an item, a tab and its description), in bytes.
    public static let maximumLineBytes = 65_536

    /// Why `path`, as written in the policy, is not a relative path inside the policy directory
    /// (nil: it is, as far as its text tells).
    public static func pathProblem(_ path: String) -> String? {
        if path.isEmpty { return "expected a path relative to the policy directory" }
        if path.hasPrefix("/") { return "\(path) is an absolute path; give a path relative to the policy directory (e.g. catalogs/products.tsv)" }
        if path.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
            return "the path holds a control character"
        }
        if path.split(separator: "/", omittingEmptySubsequences: true).contains("..") {
            return "\(path) leaves the policy directory (..); keep catalogs inside it (e.g. catalogs/products.tsv)"
        }
        return nil
    }

    /// Where a declared path leads in the file system.
    public enum Resolution: Sendable, Equatable {
        /// The file exists inside the policy directory; its real path (symbolic links resolved).
        case inside(String)
        /// Nothing is there.
        case missing
        /// It leads outside the policy directory, or cannot be checked; the reason.
        case refused(String)
    }

    /// Resolves `path` (relative, ``pathProblem(_:)`` nil) against `policyDirectory`, following
    /// symbolic links: a file whose real path is not inside the policy directory's real path is
    /// refused, and so is a symbolic link that leads nowhere.
    public static func resolve(_ path: String, policyDirectory: String) -> Resolution {
        if let problem = pathProblem(path) { return .refused(problem) }
        guard let directory = realPath(policyDirectory.isEmpty ? "." : policyDirectory) else {
            return .refused("the policy directory cannot be resolved")
        }
        let full = (policyDirectory.isEmpty ? "." : policyDirectory) + "/" + path
        guard let real = realPath(full) else {
            var st = stat()
            if lstat(full, &st) == 0 { return .refused("\(path) is a symbolic link that leads nowhere") }
            return .missing
        }
        let prefix = directory == "/" ? "/" : directory + "/"
        guard real.hasPrefix(prefix) else {
            return .refused("\(path) leads outside the policy directory (through a symbolic link); keep the catalog file itself inside it")
        }
        return .inside(real)
    }

    private static func realPath(_ path: String) -> String? {
        guard let p = realpath(path, nil) else { return nil }
        defer { free(p) }
        return String(cString: p)
    }

    /// A catalog's items, and their descriptions when the file gives any.
    public struct Contents: Sendable, Equatable {
        public var items: [String]
        /// Aligned with `items` ("" for an item without one); nil when no line has a description.
        public var descriptions: [String]?

        public init(items: [String], descriptions: [String]?) {
            self.items = items
            self.descriptions = descriptions
        }
    }

    /// Parses a catalog: one item per line, optionally a tab and the item's description (public
    /// catalog text). Blank lines and lines starting with `#` are skipped, and so is a repeated
    /// item. Refused, naming the line: a NUL or other control character (but the tab and a
    /// line-ending carriage return), an item longer than 256 bytes, a line longer than 64 KiB,
    /// more than ``maximumItems`` items, text that is not UTF-8. The reason never quotes the line.
    public static func parse(_ bytes: [UInt8]) -> Result<Contents, CatalogProblem> {
        var items: [String] = [], descriptions: [String] = []
        var seen: Set<String> = []
        var described = false
        var lineNumber = 0
        var start = 0
        while start < bytes.count {
            lineNumber += 1
            var end = start
            while end < bytes.count && bytes[end] != 0x0A { end += 1 }
            var line = bytes[start..<end]
            start = end + 1
            if line.last == 0x0D { line = line.dropLast() }
            guard line.count <= maximumLineBytes else { return .failure(CatalogProblem(line: lineNumber, reason: "line longer than \(maximumLineBytes) bytes")) }
            if line.contains(where: { ($0 < 0x20 && $0 != 0x09) || $0 == 0x7F }) {
                return .failure(CatalogProblem(line: lineNumber, reason: "control character (catalog lines are plain text: ITEM or ITEM<TAB>DESCRIPTION)"))
            }
            guard let text = String(validating: line, as: UTF8.self) else {
                return .failure(CatalogProblem(line: lineNumber, reason: "not UTF-8 text"))
            }
            let parts = text.split(separator: "\t", maxSplits: 1, omittingEmptySubsequences: false)
            let item = trim(parts.first.map(String.init) ?? "")
            guard !item.isEmpty && !item.hasPrefix("#") else { continue }
            guard item.utf8.count <= 256 else { return .failure(CatalogProblem(line: lineNumber, reason: "item longer than 256 bytes")) }
            guard seen.insert(item).inserted else { continue }
            guard items.count < maximumItems else {
                return .failure(CatalogProblem(line: lineNumber, reason: "more than \(maximumItems) items"))
            }
            items.append(item)
            let d = parts.count > 1 ? trim(String(parts[1])) : ""
            if !d.isEmpty { described = true }
            descriptions.append(d)
        }
        return .success(Contents(items: items, descriptions: described ? descriptions : nil))
    }

    private static func trim(_ s: String) -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        guard let first = s.firstIndex(where: { !isSpace($0) }), let last = s.lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(s[first...last])
    }
}

/// What is wrong with a catalog file, and on which line.
public struct CatalogProblem: Error, Sendable, Equatable {
    public let line: Int
    public let reason: String

    public init(line: Int, reason: String) {
        self.line = line
        self.reason = reason
    }
}
