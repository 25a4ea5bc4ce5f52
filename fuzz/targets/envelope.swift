// libFuzzer target: the ciphertext decoder (Sources/VaultCrypto/Envelope.swift), built with all
// of VaultCrypto and OpenSSL (-I Sources/COpenSSL -lcrypto).
//
// Properties:
// - openField / unwrapDEK on an arbitrary blob (and arbitrary field name, subject, KEK version)
//   throw, never crash and never return a value: forging a GCM tag is infeasible, so success on
//   a random blob means the decoder skipped authentication;
// - a blob sealed for (subject, field) opens to the same plaintext, and the same blob with the
//   input's mutation applied (one byte XORed at an input-chosen position, or truncated, or
//   extended, or opened for another field/subject) throws.
#if canImport(Glibc)
import Glibc
#endif

nonisolated(unsafe) let dek = try! AESGCMKey(SecureBytes(Array(repeating: 0x42, count: 32)))
nonisolated(unsafe) let kek = try! AESGCMKey(SecureBytes(Array(repeating: 0x24, count: 32)))
let subjectA = [UInt8](repeating: 0xA5, count: 32)
let subjectB = [UInt8](repeating: 0x5A, count: 32)

func mustFail(_ what: String, _ body: () throws -> Void) {
    do { try body() } catch { return }
    fatalError("\(what) succeeded on a blob that should not open")
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let selector = bytes.first else { return 0 }
    let rest = Array(bytes.dropFirst())
    let field = ["email", "full_name", "", "phone\u{0}", "ü"][Int(selector) % 5]

    // 1. The input as a blob.
    mustFail("openField(random)") { _ = try Envelope.openField(rest, field: field, subject: subjectA, dek: dek) }
    mustFail("unwrapDEK(random)") { _ = try Envelope.unwrapDEK(rest, subject: subjectA, kekVersion: UInt32(selector), kek: kek) }
    // A blob with a valid version byte in front.
    mustFail("openField(v1 + random)") { _ = try Envelope.openField([1] + rest, field: field, subject: subjectA, dek: dek) }

    // 2. Round trip and mutations of a genuine blob.
    let sealed: [UInt8]
    do { sealed = try Envelope.sealField(rest, field: field, subject: subjectA, dek: dek) } catch { fatalError("sealField failed: \(error)") }
    do {
        let opened = try Envelope.openField(sealed, field: field, subject: subjectA, dek: dek)
        precondition(opened == rest, "round trip changed the plaintext")
    } catch { fatalError("openField of a genuine blob failed: \(error)") }
    mustFail("openField(other subject)") { _ = try Envelope.openField(sealed, field: field, subject: subjectB, dek: dek) }
    mustFail("openField(other field)") { _ = try Envelope.openField(sealed, field: field + "x", subject: subjectA, dek: dek) }
    var flipped = sealed
    let pos = rest.isEmpty ? 0 : Int(rest[0]) * 7919 % flipped.count
    flipped[pos] ^= rest.count > 1 && rest[1] != 0 ? rest[1] : 0x01
    mustFail("openField(flipped byte \(pos))") { _ = try Envelope.openField(flipped, field: field, subject: subjectA, dek: dek) }
    let cut = Array(sealed.prefix(Int(selector) % sealed.count))
    mustFail("openField(truncated to \(cut.count))") { _ = try Envelope.openField(cut, field: field, subject: subjectA, dek: dek) }
    mustFail("openField(extended)") { _ = try Envelope.openField(sealed + [selector], field: field, subject: subjectA, dek: dek) }

    // 3. DEK wrapping: round trip, and the wrapped blob refuses another KEK version.
    let wrapped: [UInt8]
    do { wrapped = try Envelope.wrapDEK(SecureBytes(Array(repeating: selector, count: 32)), subject: subjectA, kekVersion: 3, kek: kek) } catch { fatalError("wrapDEK failed: \(error)") }
    mustFail("unwrapDEK(other version)") { _ = try Envelope.unwrapDEK(wrapped, subject: subjectA, kekVersion: 4, kek: kek) }
    var w2 = wrapped
    w2[pos % w2.count] ^= 0x80
    mustFail("unwrapDEK(flipped)") { _ = try Envelope.unwrapDEK(w2, subject: subjectA, kekVersion: 3, kek: kek) }
    return 0
}
