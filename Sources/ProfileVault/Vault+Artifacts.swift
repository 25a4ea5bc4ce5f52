public import Foundation
public import PrivateModels
public import VaultAudit
import VaultStore

/// Model artifacts are sealed with an HMAC-SHA256 under a key derived from the keyring
/// (`KeyPurpose.modelArtifact`, HKDF label `pv:model-artifact`), so a hand-edited artifact
/// (a changed item, rating, coefficient or segment value) is never loaded: `recommend` and
/// `params.from_model` refuse one whose MAC is missing or does not verify.
///
/// The MAC covers the artifact's canonical form: the artifact JSON without its top-level
/// `mac` key, in the audit chain's canonical JSON (docs/audit.md: keys sorted by their UTF-8
/// bytes, no whitespace), with every number that is a whole number of magnitude below 2^53
/// written as an integer (so re-indenting the file, or writing `1.0` as `1`, keeps it valid).
/// The message is `"profilevault model artifact v1\n"` followed by those bytes; `mac` is
/// `"hmac-sha256:"` and the 64 lower-case hex digits of the tag.
extension Vault {
    /// Where an artifact to load comes from: a file (CLI) or a request body (HTTP).
    public enum ArtifactSource: Sendable {
        case file(String)
        /// The artifact's JSON as a client sent it; errors name `label` (e.g. `model`).
        case body(JSONValue, label: String)
    }

    static let artifactMACDomain = Array("profilevault model artifact v1\n".utf8)
    static let artifactMACPrefix = "hmac-sha256:"
    /// The largest artifact file read (bytes).
    static let maxArtifactBytes = 256 << 20

    /// The canonical bytes the MAC covers (see the type's comment): `value` without its
    /// top-level `mac`, numbers normalised, canonical JSON.
    static func artifactCanonicalBytes(_ value: JSONValue) -> [UInt8]? {
        guard case .object(let pairs) = value else { return nil }
        return normalised(.object(pairs.filter { $0.0 != "mac" })).canonicalBytes()
    }

    static func normalised(_ v: JSONValue) -> JSONValue {
        switch v {
        case .double(let d) where d == d.rounded() && abs(d) < 9_007_199_254_740_992:
            return Int64(exactly: d).map { .int($0) } ?? v
        case .array(let items): return .array(items.map(normalised))
        case .object(let pairs): return .object(pairs.map { ($0.0, normalised($0.1)) })
        default: return v
        }
    }

    func artifactTag(_ canonical: [UInt8]) -> String {
        Self.artifactMACPrefix + store.modelArtifactMAC(Self.artifactMACDomain + canonical).map { String(format: "%02x", $0) }.joined()
    }

    /// The artifact with its `mac` set (the JSON `train` writes).
    func sealed(_ artifact: ModelArtifact) throws -> (ModelArtifact, Data) {
        var a = artifact
        a.mac = nil
        guard let value = try? JSONValue.parse(Array(try a.encoded())), let canonical = Self.artifactCanonicalBytes(value) else {
            throw VaultError(.internalFailure, "the model artifact could not be put in canonical form")
        }
        a.mac = artifactTag(canonical)
        return (a, try a.encoded())
    }

    /// Loads an artifact whose MAC verifies under this store's keyring. A file that is not an
    /// artifact is invalid input (65); a missing or wrong MAC is an integrity error (exit 1) for
    /// a file and invalid input (HTTP 400) for a request body. Nothing of the artifact is used
    /// before its MAC verified; it is decoded from the very bytes the MAC covers.
    public func loadArtifact(_ source: ArtifactSource) throws -> ModelArtifact {
        let value: JSONValue, label: String, integrity: VaultError.Kind
        switch source {
        case .file(let path):
            label = path
            integrity = .integrity
            guard let data = FileManager.default.contents(atPath: path) else { throw VaultError(.notFound, "\(path): no such model file") }
            guard data.count <= Self.maxArtifactBytes, let v = try? JSONValue.parse(Array(data)) else {
                throw VaultError(.invalidInput, "\(path): not a model artifact (JSON)")
            }
            value = v
        case .body(let v, let l):
            label = l
            integrity = .invalidInput
            value = v
        }
        guard case .object = value, let canonical = Self.artifactCanonicalBytes(value) else {
            throw VaultError(.invalidInput, "\(label): not a model artifact (a JSON object)")
        }
        guard case .string(let given)? = value["mac"] else {
            throw VaultError(integrity, "\(label): the model artifact has no MAC (mac); only artifacts written by train with this store's keyring are loaded")
        }
        let expected = artifactTag(canonical)
        guard Self.constantTimeEqual(Array(given.utf8), Array(expected.utf8)) else {
            throw VaultError(integrity, "\(label): the model artifact's MAC does not verify (it was edited, or made with another keyring): refused")
        }
        do {
            return try ModelArtifact.decode(Data(canonical))
        } catch {
            throw VaultError(.invalidInput, "\(label): not a model artifact")
        }
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var d: UInt8 = 0
        for (x, y) in zip(a, b) { d |= x ^ y }
        return d == 0
    }
}
