internal import CPKCS11
internal import Foundation
#if canImport(Glibc)
internal import Glibc
#elseif canImport(Musl)
internal import Musl
#elseif canImport(Darwin)
internal import Darwin
#endif

// Key custody in a PKCS#11 token (an HSM, SoftHSM2, or a cloud KMS's PKCS#11 library): the
// keyring's root secrets are sealed with CKM_AES_GCM under an AES-256 key that is sensitive and
// not extractable, so its value never leaves the token (docs/keys-and-encryption.md).
//
// Every custody operation is one complete PKCS#11 conversation, serialised process-wide:
// C_Initialize, find the token by label, C_OpenSession, C_Login, the operation, C_Logout,
// C_CloseSession, C_Finalize. Nothing stays open between operations, so a token that went
// away and came back (a restarted HSM, a re-plugged device, a network HSM's reconnect) is found
// again by the next operation without a restart. Operations are rare: opening a store, adopting
// a changed keyring file, rotation, `keys seal`/`unseal`/`generate`, the health probe.

/// A parsed RFC 7512 PKCS#11 URI naming the sealing key:
/// `pkcs11:token=vault;object=pv-seal?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/secrets/pin`.
///
/// Path attributes (`;`-separated): `token` (the token label), `object` (the key's CKA_LABEL),
/// `serial` (the token's serial number), `type` (must be `secret-key` when given). Query
/// attributes (`&`-separated): `module-path` (the PKCS#11 library to load), `pin-source` (a
/// `file:` URI or an absolute path of a file holding the user PIN). `module-path` is also
/// accepted among the path attributes, as some tools write it. Values are percent-decoded.
///
/// `pin-value` is refused: a URI travels through command lines, environment variables, shell
/// histories and logs, none of which is a place for a PIN. Unknown attributes are refused too,
/// so a misspelt one is never silently ignored. ``description`` never contains a PIN (there is
/// none to show) and names the PIN file only by path.
public struct PKCS11URI: Sendable, Equatable, CustomStringConvertible {
    public var modulePath: String
    public var token: String?
    public var object: String?
    public var serial: String?
    /// The file holding the user PIN; nil: no C_Login (a token that needs none, or one with a
    /// protected authentication path).
    public var pinFile: String?

    public init(modulePath: String, token: String?, object: String?, serial: String? = nil, pinFile: String? = nil) {
        self.modulePath = modulePath
        self.token = token
        self.object = object
        self.serial = serial
        self.pinFile = pinFile
    }

    /// Parses `text`; a problem is a ``KeyringError`` of kind `.invalidURI` that names the
    /// attribute, never its value (a mistaken URI may hold a secret).
    public static func parse(_ text: String) throws(KeyringError) -> PKCS11URI {
        func fail(_ reason: String) -> KeyringError {
            KeyringError(kind: .invalidURI, path: "the PKCS#11 URI", reason: reason)
        }
        guard text.hasPrefix("pkcs11:") else { throw fail("must start with pkcs11: (RFC 7512)") }
        guard text.utf8.count <= 4096 else { throw fail("longer than 4096 bytes") }
        let rest = String(text.dropFirst("pkcs11:".count))
        let parts = rest.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let pathPart = parts.first.map(String.init) ?? ""
        let queryPart = parts.count > 1 ? String(parts[1]) : ""
        var module: String?, token: String?, object: String?, serial: String?, pin: String?
        func assign(_ name: String, _ raw: Substring, query: Bool) throws(KeyringError) {
            guard let value = percentDecoded(raw) else { throw fail("attribute \(name): invalid percent-encoding or not UTF-8") }
            func once(_ slot: inout String?) throws(KeyringError) {
                guard slot == nil else { throw fail("attribute \(name) appears twice") }
                guard !value.isEmpty else { throw fail("attribute \(name) is empty") }
                slot = value
            }
            switch name {
            case "module-path": try once(&module)
            case "token": try once(&token)
            case "object": try once(&object)
            case "serial": try once(&serial)
            case "type":
                guard value == "secret-key" else { throw fail("attribute type: the sealing key is a secret-key") }
            case "pin-source":
                guard query else { throw fail("pin-source belongs in the query part (after ?)") }
                var path = value
                if path.hasPrefix("file://") { path = String(path.dropFirst("file://".count)) } else if path.hasPrefix("file:") { path = String(path.dropFirst("file:".count)) }
                guard path.hasPrefix("/") else { throw fail("attribute pin-source: expected file:/absolute/path") }
                guard pin == nil else { throw fail("attribute pin-source appears twice") }
                pin = path
            case "pin-value":
                throw fail("pin-value is refused (a URI ends up in command lines, environments and logs): put the PIN in a file only this user can read and name it with pin-source=file:/path")
            default:
                throw fail("unsupported attribute \(printable(name)) (supported: token, object, serial, type, module-path, pin-source)")
            }
        }
        for attribute in pathPart.split(separator: ";", omittingEmptySubsequences: true) {
            guard let eq = attribute.firstIndex(of: "=") else { throw fail("path attribute without =") }
            try assign(String(attribute[..<eq]), attribute[attribute.index(after: eq)...], query: false)
        }
        for attribute in queryPart.split(separator: "&", omittingEmptySubsequences: true) {
            guard let eq = attribute.firstIndex(of: "=") else { throw fail("query attribute without =") }
            try assign(String(attribute[..<eq]), attribute[attribute.index(after: eq)...], query: true)
        }
        guard let module, module.hasPrefix("/") else {
            throw fail("module-path=/absolute/path/to/the/pkcs11-library.so is required (the module is never searched for)")
        }
        if let token, token.utf8.count > 32 { throw fail("attribute token: a token label has at most 32 bytes") }
        return PKCS11URI(modulePath: module, token: token, object: object, serial: serial, pinFile: pin)
    }

    /// The attribute name when it is short printable ASCII, else a placeholder.
    private static func printable(_ s: String) -> String {
        s.utf8.count <= 32 && s.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) ? s : "(unprintable)"
    }

    static func percentDecoded(_ s: Substring) -> String? {
        var bytes: [UInt8] = []
        var it = Array(s.utf8)[...]
        while let c = it.popFirst() {
            if c == UInt8(ascii: "%") {
                guard let h = it.popFirst(), let l = it.popFirst(), let hv = hexValue(h), let lv = hexValue(l) else { return nil }
                bytes.append(hv << 4 | lv)
            } else {
                bytes.append(c)
            }
        }
        guard !bytes.contains(0) else { return nil }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    private static func encoded(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "/"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            default:
                out += String(format: "%%%02X", b)
            }
        }
        return out
    }

    /// The URI in canonical form (path attributes, then `module-path` and `pin-source` in the
    /// query). Holds no PIN.
    public var description: String {
        var path: [String] = []
        if let token { path.append("token=" + Self.encoded(token)) }
        if let object { path.append("object=" + Self.encoded(object)) }
        if let serial { path.append("serial=" + Self.encoded(serial)) }
        var query = ["module-path=" + Self.encoded(modulePath)]
        if let pinFile { query.append("pin-source=file:" + Self.encoded(pinFile)) }
        return "pkcs11:" + path.joined(separator: ";") + "?" + query.joined(separator: "&")
    }

    /// The module's file name (no directory), for what is shown to HTTP clients.
    public var moduleName: String { modulePath.split(separator: "/").last.map(String.init) ?? modulePath }
}

/// Where a keyring's root of trust lives.
public enum KeyCustody: Sendable, Equatable {
    /// The keyring file holds the root secrets (mode 0600): whoever reads it holds the data.
    case file
    /// The keyring file holds the root secrets sealed under a key in a PKCS#11 token.
    case pkcs11(PKCS11URI)

    /// `file` or `pkcs11`, as the sealed file's `custody` field and `keys status` say.
    public var name: String {
        switch self {
        case .file: "file"
        case .pkcs11: "pkcs11"
        }
    }
}

// MARK: - The conversation with a module

/// One PKCS#11 failure: the return value and a readable reason.
struct PKCS11Failure: Error {
    let rv: UInt
    let step: String
}

/// CKR names for messages (the common ones; others print as hex).
func ckrName(_ rv: UInt) -> String {
    let names: [UInt: String] = [
        0x00: "CKR_OK", 0x05: "CKR_GENERAL_ERROR", 0x06: "CKR_FUNCTION_FAILED", 0x07: "CKR_ARGUMENTS_BAD",
        0x30: "CKR_DEVICE_ERROR", 0x31: "CKR_DEVICE_MEMORY", 0x32: "CKR_DEVICE_REMOVED",
        0x40: "CKR_ENCRYPTED_DATA_INVALID", 0x41: "CKR_ENCRYPTED_DATA_LEN_RANGE", 0x60: "CKR_KEY_HANDLE_INVALID",
        0x68: "CKR_KEY_FUNCTION_NOT_PERMITTED", 0x70: "CKR_MECHANISM_INVALID", 0x71: "CKR_MECHANISM_PARAM_INVALID",
        0xa0: "CKR_PIN_INCORRECT", 0xa4: "CKR_PIN_LOCKED", 0xb0: "CKR_SESSION_CLOSED", 0xb3: "CKR_SESSION_HANDLE_INVALID",
        0xe0: "CKR_TOKEN_NOT_PRESENT", 0xe1: "CKR_TOKEN_NOT_RECOGNIZED", 0xe2: "CKR_TOKEN_WRITE_PROTECTED",
        0x100: "CKR_USER_ALREADY_LOGGED_IN", 0x101: "CKR_USER_NOT_LOGGED_IN", 0x103: "CKR_USER_TYPE_INVALID",
        0x150: "CKR_BUFFER_TOO_SMALL", 0x190: "CKR_CRYPTOKI_NOT_INITIALIZED", 0x191: "CKR_CRYPTOKI_ALREADY_INITIALIZED",
        0x3: "CKR_SLOT_ID_INVALID", 0x10: "CKR_ATTRIBUTE_READ_ONLY", 0x12: "CKR_ATTRIBUTE_TYPE_INVALID",
    ]
    return names[rv] ?? String(format: "CKR 0x%lx", rv)
}

/// Return values that mean the token (or the device, or the connection to it) is not there:
/// the operation may succeed later, so they are `custodyUnavailable` (HTTP 503), not a
/// configuration error.
func ckrMeansUnavailable(_ rv: UInt) -> Bool {
    [0x30, 0x31, 0x32, 0xb0, 0xb3, 0xe0, 0xe1, 0x3, 0x190].contains(rv)
}

/// The loaded modules (never unloaded) and the one lock every conversation holds.
private final class ModuleRegistry: @unchecked Sendable {
    // `@unchecked Sendable`: `modules` is only touched under `lock`, which also serialises
    // every call into any module (C_Initialize/C_Finalize are process-wide per module).
    let lock = NSLock()
    var modules: [String: UnsafeMutablePointer<CK_FUNCTION_LIST>] = [:]
}

private let registry = ModuleRegistry()

/// Runs `body` while no PKCS#11 conversation of this process runs (the tests move SoftHSM2
/// token directories under it, so that no conversation sees a token half moved).
package func withPKCS11Lock<R>(_ body: () throws -> R) rethrows -> R {
    registry.lock.lock()
    defer { registry.lock.unlock() }
    return try body()
}

/// An open, logged-in session on the URI's token (inside ``PKCS11Token/withSession``).
package struct PKCS11Session {
    let f: UnsafeMutablePointer<CK_FUNCTION_LIST>
    let handle: CK_SESSION_HANDLE
    let uri: PKCS11URI
    let place: String

    func fail(_ kind: KeyringError.Kind, _ reason: String) -> KeyringError {
        KeyringError(kind: kind, path: place, reason: reason)
    }

    func failure(_ rv: UInt, _ step: String) -> KeyringError {
        if ckrMeansUnavailable(rv) {
            return fail(.custodyUnavailable, "PKCS#11 token \(PKCS11Token.quoted(uri.token)) is unavailable (\(step): \(ckrName(rv))); the operation can be retried when it is back")
        }
        return fail(.custody, "PKCS#11 \(step) failed: \(ckrName(rv))")
    }

    /// Handles of the objects labelled `label` (secret keys only unless `anyClass`), at most 2.
    func find(label: String, anyClass: Bool) throws(KeyringError) -> [CK_OBJECT_HANDLE] {
        var found = [CK_OBJECT_HANDLE](repeating: 0, count: 2)
        var count: UInt = 0
        var label = label
        let rv = label.withUTF8 { l in
            l.withMemoryRebound(to: CChar.self) { c in
                pv_p11_find(f, handle, c.baseAddress, UInt(c.count), anyClass ? 0 : 1, &found, 2, &count)
            }
        }
        guard rv == 0 else { throw failure(rv, "C_FindObjects") }
        return Array(found.prefix(Int(min(count, 2))))
    }

    /// The sealing key named by the URI's `object`, checked: one AES-256 secret key, sensitive,
    /// not extractable (and never extractable, when the token says), usable to encrypt and
    /// decrypt. Anything else is refused with a `.custody` error naming the attribute.
    func sealingKey() throws(KeyringError) -> CK_OBJECT_HANDLE {
        guard let object = uri.object else { throw fail(.custody, "the PKCS#11 URI names no object (object=LABEL of the sealing key)") }
        let keys = try find(label: object, anyClass: false)
        let name = "key \(PKCS11Token.quoted(object)) on token \(PKCS11Token.quoted(uri.token))"
        guard let key = keys.first else {
            throw fail(.custody, "no secret \(name) (create one with: profilectl keys generate --hsm URI --out FILE)")
        }
        guard keys.count == 1 else { throw fail(.custody, "more than one secret key is labelled \(PKCS11Token.quoted(object)) on token \(PKCS11Token.quoted(uri.token)); refusing an ambiguous sealing key") }
        var facts = pv_p11_key_facts()
        let rv = pv_p11_facts(f, handle, key, &facts)
        guard rv == 0 else { throw failure(rv, "C_GetAttributeValue") }
        guard facts.key_type == 0x1f, facts.value_len == 32 else {
            throw fail(.custody, "\(name) is not an AES-256 key (CKA_KEY_TYPE CKK_AES, CKA_VALUE_LEN 32); refused")
        }
        guard facts.extractable == 0 else {
            throw fail(.custody, "\(name) is extractable (CKA_EXTRACTABLE is not false): its value can leave the token; refused (create a non-extractable one with profilectl keys generate --hsm URI --out FILE)")
        }
        guard facts.sensitive == 1 else {
            throw fail(.custody, "\(name) is not sensitive (CKA_SENSITIVE is not true): its value can be read from the token; refused")
        }
        guard facts.never_extractable != 0 else {
            throw fail(.custody, "\(name) was extractable once (CKA_NEVER_EXTRACTABLE false): a copy of its value may exist outside the token; refused")
        }
        guard facts.encrypt != 0, facts.decrypt != 0 else {
            throw fail(.custody, "\(name) may not encrypt and decrypt (CKA_ENCRYPT, CKA_DECRYPT); refused")
        }
        return key
    }

    /// AES-GCM with a 96-bit IV and a 128-bit tag through the module. Encrypt returns
    /// ciphertext || tag; decrypt writes the plaintext into `plaintextOut` (capacity at least
    /// `input.count`) and returns its length. A decrypt failure other than an unavailable token
    /// is `.sealIntegrity`.
    package func gcmEncrypt(key: UInt, iv: [UInt8], aad: [UInt8], plaintext: UnsafeRawBufferPointer) throws(KeyringError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: plaintext.count + 16)
        var n = UInt(out.count)
        let rv = out.withUnsafeMutableBytes { o in
            iv.withUnsafeBytes { i in
                aad.withUnsafeBytes { a in
                    pv_p11_gcm(f, handle, key, 1, i.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt(i.count),
                               a.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt(a.count), 128,
                               plaintext.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt(plaintext.count),
                               o.baseAddress?.assumingMemoryBound(to: UInt8.self), &n)
                }
            }
        }
        guard rv == 0, n == UInt(out.count) else { throw failure(rv, "C_Encrypt (CKM_AES_GCM)") }
        return out
    }

    package func gcmDecrypt(key: UInt, iv: [UInt8], aad: [UInt8], input: [UInt8],
                            plaintextOut: UnsafeMutableRawBufferPointer) throws(KeyringError) -> Int {
        guard input.count >= 16, plaintextOut.count >= input.count else { throw fail(.sealIntegrity, "the sealed keyring is truncated") }
        var n = UInt(plaintextOut.count)
        let rv = iv.withUnsafeBytes { i in
            aad.withUnsafeBytes { a in
                input.withUnsafeBytes { c in
                    pv_p11_gcm(f, handle, key, 0, i.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt(i.count),
                               a.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt(a.count), 128,
                               c.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt(c.count),
                               plaintextOut.baseAddress?.assumingMemoryBound(to: UInt8.self), &n)
                }
            }
        }
        if rv != 0 {
            if ckrMeansUnavailable(rv) { throw failure(rv, "C_Decrypt") }
            throw fail(.sealIntegrity, "the sealed keyring does not open under key \(PKCS11Token.quoted(uri.object)) on token \(PKCS11Token.quoted(uri.token)) (\(ckrName(rv))): the file was modified, or it was sealed by another key")
        }
        guard n <= UInt(plaintextOut.count) else { throw fail(.sealIntegrity, "the token returned more bytes than it was given") }
        return Int(n)
    }

    /// A new AES-256 key on the token labelled with the URI's object, refused when any object
    /// already has that label. `extractable` exists for the tests that check the refusal.
    package func generateKey(extractable: Bool = false) throws(KeyringError) {
        guard let object = uri.object else { throw fail(.custody, "the PKCS#11 URI names no object (object=LABEL for the new key)") }
        guard object.utf8.count <= 256 else { throw fail(.custody, "the object label is longer than 256 bytes") }
        guard try find(label: object, anyClass: true).isEmpty else {
            throw fail(.custody, "an object labelled \(PKCS11Token.quoted(object)) already exists on token \(PKCS11Token.quoted(uri.token)); refusing to create a second one (choose another object label)")
        }
        var key: CK_OBJECT_HANDLE = 0
        var label = object
        let rv = label.withUTF8 { l in
            l.withMemoryRebound(to: CChar.self) { c in
                pv_p11_generate_aes256(f, handle, c.baseAddress, UInt(c.count), extractable ? 1 : 0, 1, &key)
            }
        }
        guard rv == 0 else { throw failure(rv, "C_GenerateKey (CKM_AES_KEY_GEN)") }
    }

    /// A session (not token) AES key with a known value: the tests run the Wycheproof vectors
    /// through the module with it.
    package func importSessionKey(_ value: [UInt8]) throws(KeyringError) -> UInt {
        var key: CK_OBJECT_HANDLE = 0
        let rv = value.withUnsafeBytes { v in
            pv_p11_import_aes(f, handle, v.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt(v.count), &key)
        }
        guard rv == 0 else { throw failure(rv, "C_CreateObject") }
        return key
    }

    package func destroy(_ object: UInt) {
        _ = pv_p11_destroy(f, handle, object)
    }
}

package enum PKCS11Token {
    static func quoted(_ s: String?) -> String {
        guard let s else { return "(any)" }
        let shown = s.utf8.count <= 64 && s.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value < 0x7f && $0 != "\"" }) ? s : "(label not shown)"
        return "\"\(shown)\""
    }

    /// Why the module at `path` must not be loaded (nil: it may): the library runs inside the
    /// process that holds the keys, so, as the keyring and PIN files are checked, the file (after
    /// symbolic links) and the directory holding it must be owned by root or by this user and
    /// writable by no one else. A missing file is left to the loader's "not found".
    static func moduleFileProblem(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        let file = String(cString: resolved)
        let directory = file.contains("/") ? String(file[..<(file.lastIndex(of: "/") ?? file.endIndex)]) : "."
        for (what, p) in [("the file", file), ("its directory", directory.isEmpty ? "/" : directory)] {
            var st = stat()
            guard stat(p, &st) == 0 else { return "cannot be examined (\(what))" }
            if st.st_uid != 0 && st.st_uid != geteuid() {
                return "is refused: \(what) belongs to another user (uid \(st.st_uid)); whoever can replace the module runs code inside the vault"
            }
            if st.st_mode & (S_IWGRP | S_IWOTH) != 0 {
                return "is refused: \(what) is writable by group or others (mode \(String(st.st_mode & 0o7777, radix: 8))); whoever can replace the module runs code inside the vault"
            }
        }
        return nil
    }

    /// The loaded module at `path` (dlopen once per path, never closed). Caller holds the lock.
    private static func module(_ path: String, place: String) throws(KeyringError) -> UnsafeMutablePointer<CK_FUNCTION_LIST> {
        if let m = registry.modules[path] { return m }
        if let problem = moduleFileProblem(path) {
            throw KeyringError(kind: .custody, path: place, reason: "PKCS#11 module \(path) \(problem)")
        }
        var list: UnsafeMutablePointer<CK_FUNCTION_LIST>?
        var message = [CChar](repeating: 0, count: 512)
        let code = message.withUnsafeMutableBufferPointer { pv_p11_load(path, &list, $0.baseAddress, $0.count) }
        guard code == 0, let list else {
            let reason: String
            switch code {
            case 1:
                var st = stat()
                reason = stat(path, &st) == 0 ? "cannot be loaded (dlopen: \(String(decoding: message.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)))" : "not found (no such file)"
            case 2: reason = "is not a PKCS#11 module (no C_GetFunctionList)"
            default: reason = "C_GetFunctionList failed"
            }
            throw KeyringError(kind: .custody, path: place, reason: "PKCS#11 module \(path) \(reason)")
        }
        registry.modules[path] = list
        return list
    }

    /// Runs `body` in a fresh session on the URI's token, logged in with the PIN from
    /// `pin-source` when there is one. `place` names the keyring in errors.
    package static func withSession<R>(_ uri: PKCS11URI, readWrite: Bool = false, place: String,
                                       _ body: (PKCS11Session) throws(KeyringError) -> R) throws(KeyringError) -> R {
        func fail(_ kind: KeyringError.Kind, _ reason: String) -> KeyringError { KeyringError(kind: kind, path: place, reason: reason) }
        // The PIN is read before the lock and before any call into the module.
        let pin: SecureBytes? = try uri.pinFile.map { (file: String) throws(KeyringError) -> SecureBytes in try readPIN(file, place: place) }
        registry.lock.lock()
        defer { registry.lock.unlock() }
        let f = try module(uri.modulePath, place: place)
        let initialized = pv_p11_initialize(f)
        // Already initialised (by another component of this process): use it, leave it so.
        guard initialized == 0 || initialized == 0x191 else {
            throw fail(.custodyUnavailable, "PKCS#11 C_Initialize of \(uri.moduleName) failed (\(ckrName(initialized)))")
        }
        defer { if initialized == 0 { _ = pv_p11_finalize(f) } }
        let slot = try findSlot(f, uri, place: place)
        var session: CK_SESSION_HANDLE = 0
        let opened = pv_p11_open(f, slot.id, readWrite ? 1 : 0, &session)
        let probe = PKCS11Session(f: f, handle: session, uri: uri, place: place)
        guard opened == 0 else { throw probe.failure(opened, "C_OpenSession") }
        defer { _ = pv_p11_close(f, session) }
        var loggedIn = false
        if let pin {
            let rv = pin.withUnsafeBytes { p in pv_p11_login(f, session, p.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt(p.count)) }
            switch rv {
            case 0: loggedIn = true
            case 0x100: break   // CKR_USER_ALREADY_LOGGED_IN
            case 0xa0:
                throw fail(.custody, "the PKCS#11 token \(quoted(uri.token)) refused the PIN from \(uri.pinFile ?? "the pin-source") (CKR_PIN_INCORRECT)")
            case 0xa4:
                throw fail(.custody, "the PKCS#11 token \(quoted(uri.token)) has locked its user PIN (CKR_PIN_LOCKED); its security officer must unlock it")
            default:
                throw probe.failure(rv, "C_Login")
            }
        } else if slot.flags & 0x4 != 0 && slot.flags & 0x100 == 0 {
            // CKF_LOGIN_REQUIRED without CKF_PROTECTED_AUTHENTICATION_PATH.
            throw fail(.custody, "the PKCS#11 token \(quoted(uri.token)) needs a PIN: add ?pin-source=file:/path/to/pin-file to the URI")
        } else if slot.flags & 0x100 != 0 {
            let rv = pv_p11_login(f, session, nil, 0)
            guard rv == 0 || rv == 0x100 else { throw probe.failure(rv, "C_Login (protected authentication path)") }
            loggedIn = rv == 0
        }
        defer { if loggedIn { _ = pv_p11_logout(f, session) } }
        return try body(probe)
    }

    /// Whether the URI's token is present (the health probe): nil when it is, else why not.
    /// Needs no PIN; touches no key.
    package static func problem(_ uri: PKCS11URI) -> String? {
        registry.lock.lock()
        defer { registry.lock.unlock() }
        do throws(KeyringError) {
            let f = try module(uri.modulePath, place: "health")
            let initialized = pv_p11_initialize(f)
            guard initialized == 0 || initialized == 0x191 else { return "C_Initialize failed (\(ckrName(initialized)))" }
            defer { if initialized == 0 { _ = pv_p11_finalize(f) } }
            _ = try findSlot(f, uri, place: "health")
            return nil
        } catch {
            return error.reason
        }
    }

    private static func findSlot(_ f: UnsafeMutablePointer<CK_FUNCTION_LIST>, _ uri: PKCS11URI,
                                 place: String) throws(KeyringError) -> (id: CK_SLOT_ID, flags: UInt) {
        func absent(_ why: String) -> KeyringError {
            KeyringError(kind: .custodyUnavailable, path: place, reason: "PKCS#11 token \(quoted(uri.token)) is not present in \(uri.moduleName) (\(why)); the operation can be retried when it is back")
        }
        var count: UInt = 0
        var rv = pv_p11_slots(f, nil, &count)
        guard rv == 0 else { throw absent("C_GetSlotList: \(ckrName(rv))") }
        guard count > 0, count <= 4096 else { throw absent("no slot holds a token") }
        var slots = [CK_SLOT_ID](repeating: 0, count: Int(count))
        rv = pv_p11_slots(f, &slots, &count)
        guard rv == 0 else { throw absent("C_GetSlotList: \(ckrName(rv))") }
        var matches: [(CK_SLOT_ID, UInt)] = []
        for slot in slots.prefix(Int(min(count, UInt(slots.count)))) {
            var label = [UInt8](repeating: 0, count: 32), serial = [UInt8](repeating: 0, count: 16)
            var flags: UInt = 0
            guard pv_p11_token(f, slot, &label, &serial, &flags) == 0 else { continue }
            // CKF_TOKEN_INITIALIZED: an uninitialised token is not the one named.
            guard flags & 0x400 != 0 else { continue }
            if let want = uri.token, trimmed(label) != want { continue }
            if let want = uri.serial, trimmed(serial) != want { continue }
            matches.append((slot, flags))
        }
        guard let first = matches.first else { throw absent("no token with this label") }
        guard matches.count == 1 else {
            throw KeyringError(kind: .custody, path: place, reason: "more than one PKCS#11 token matches \(quoted(uri.token)); add serial= to the URI")
        }
        return first
    }

    /// A PKCS#11 label or serial: space padded, not NUL terminated.
    private static func trimmed(_ field: [UInt8]) -> String {
        var end = field.count
        while end > 0, field[end - 1] == 0x20 || field[end - 1] == 0 { end -= 1 }
        return String(decoding: field[..<end], as: UTF8.self)
    }

    /// The PIN file: the same checks as a keyring (a regular file, 0600, this user's), at most
    /// 256 bytes, one trailing newline dropped. Its content is never shown.
    static func readPIN(_ path: String, place: String) throws(KeyringError) -> SecureBytes {
        func fail(_ reason: String) -> KeyringError { KeyringError(kind: .custody, path: place, reason: "PIN file \(path) \(reason)") }
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw fail("cannot be opened: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw fail("cannot be examined") }
        if let problem = SecretFile.problem(mode: UInt32(st.st_mode), owner: UInt32(st.st_uid), euid: UInt32(geteuid()), path: path) {
            throw fail(problem)
        }
        let capacity = 258
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 1)
        defer { OPENSSL_cleanse_bytes(buffer); buffer.deallocate() }
        var length = 0
        while length < capacity {
            let n = read(fd, buffer.baseAddress! + length, capacity - length)
            if n < 0 { if errno == EINTR || errno == EAGAIN { continue }; throw fail("cannot be read") }
            if n == 0 { break }
            length += n
        }
        if length > 0, buffer[length - 1] == 0x0a { length -= 1 }
        if length > 0, buffer[length - 1] == 0x0d { length -= 1 }
        guard length > 0, length <= 256 else { throw fail(length == 0 ? "is empty" : "is longer than 256 bytes") }
        return SecureBytes(count: length, initializingWith: { (out: UnsafeMutableRawBufferPointer) in
            out.copyMemory(from: UnsafeRawBufferPointer(rebasing: buffer[0..<length]))
        })
    }
}
