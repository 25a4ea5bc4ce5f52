// libFuzzer target: the audit export verifier (Sources/VaultAudit/*.swift, which needs all of
// VaultCrypto and OpenSSL). fuzz/run.sh compiles VaultAudit's files into the same module as
// VaultCrypto (their `import VaultCrypto` line removed in a build copy).
//
// The input is written to a file and checked with AuditExportVerifier.verify against a fixed
// Ed25519 public key, with and without --expect-head. Properties: no crash or hang; the
// answer is consistent (ok <=> no reason <=> no first_bad; entries >= 0); a file the
// fuzzer made that verifies ok must be a genuine export signed by the key (only the seeds
// are), so ok with a signature the harness did not make would be reported by the verifier's
// own signature check, not here.
//
// `PV_FUZZ_MAKE_SEEDS=DIR ./export` writes genuine exports signed with the fixed key (and
// a few edge cases) into DIR and exits: fuzz/run.sh uses it to fill the seed corpus.
#if canImport(Glibc)
import Glibc
#endif
import Foundation

nonisolated(unsafe) let signer = try! Ed25519PrivateKey(seed: SecureBytes(Array(repeating: 7, count: 32)))
let scratchPath = "/tmp/pv-fuzz-export-\(getpid()).jsonl"

func writeScratch(_ bytes: UnsafeRawBufferPointer) {
    let fd = open(scratchPath, O_CREAT | O_TRUNC | O_WRONLY, 0o600)
    precondition(fd >= 0)
    var off = 0
    while off < bytes.count {
        let n = write(fd, bytes.baseAddress! + off, bytes.count - off)
        precondition(n > 0)
        off += n
    }
    close(fd)
}

/// A genuine export of `n` entries starting at `first`, with checkpoints every `every` entries.
func genuineExport(first: Int64, n: Int, every: Int) -> String {
    var prev = [UInt8](repeating: 0, count: 32)
    if first > 1 { prev = Array(repeating: 0x11, count: 32) }
    let start = prev
    var lines: [String] = []
    for i in 0..<n {
        let seq = first + Int64(i)
        let entry = JSONValue.object([
            ("metadata.sequence", .int(seq)), ("time", .int(1_790_000_000_000 + seq)), ("time_dt", .string("2026-09-21T12:00:00.000Z")),
            ("class_uid", .int(6003)), ("category_uid", .int(6)), ("activity_id", .int(2)), ("actor.user.name", .string("fuzz \u{1F600} \"q\" \\ \n")),
            ("api.operation", .string("get")), ("api.request.uid", .string("r\(i)")), ("status", .string("ok")), ("status_id", .int(1)),
            ("status_detail", .null), ("unmapped.role", .string("support")), ("unmapped.purpose", .string("customer_support")),
            ("unmapped.subject", .string(String(repeating: "ab", count: 32))), ("unmapped.fields", .array([.string("email"), .string("phone")])),
            ("unmapped.epsilon", .null), ("unmapped.counts", .object([("inserted", .int(-1))])),
        ])
        let h = AuditLog.chain(previous: prev, entry: entry)
        var pairs: [(String, JSONValue)]
        if case .object(let p) = entry { pairs = p } else { pairs = [] }
        pairs.append(("prev_hash", .string(AuditLog.hex(prev))))
        pairs.append(("hash", .string(AuditLog.hex(h))))
        if (i + 1) % every == 0 || i == n - 1 {
            pairs.append(("checkpoint_signature", .string(AuditLog.hex(try! signer.signature(for: AuditLog.checkpointMessage(sequence: seq, hash: h))))))
        }
        lines.append(JSONValue.object(pairs).canonicalString())
        prev = h
    }
    let last = first + Int64(n) - 1
    let sig = try! signer.signature(for: AuditLog.exportHeadMessage(firstSequence: first, previous: start, lastSequence: last, head: prev))
    lines.append(JSONValue.object([("head", .object([
        ("first_sequence", .int(first)), ("hash", .string(AuditLog.hex(prev))), ("last_sequence", .int(last)),
        ("previous", .string(AuditLog.hex(start))), ("public_key", .string("")), ("signature", .string(AuditLog.hex(sig))),
        ("signed_at", .string("2026-09-21T12:00:00Z")),
    ]))]).canonicalString())
    return lines.joined(separator: "\n") + "\n"
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> Int32 {
    guard let dir = ProcessInfo.processInfo.environment["PV_FUZZ_MAKE_SEEDS"] else { return 0 }
    let seeds: [(String, String)] = [
        ("genuine-1", genuineExport(first: 1, n: 1, every: 1)),
        ("genuine-5", genuineExport(first: 1, n: 5, every: 2)),
        ("genuine-slice", genuineExport(first: 4, n: 3, every: 1)),
        ("head-only", genuineExport(first: 1, n: 0, every: 1)),
        ("empty", ""),
        ("csv", "metadata.sequence,time\n1,2\n"),
    ]
    for (name, text) in seeds {
        try! text.write(toFile: dir + "/" + name, atomically: true, encoding: .utf8)
    }
    exit(0)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    writeScratch(UnsafeRawBufferPointer(start: data, count: size))
    for expect in [nil, String(repeating: "0", count: 64)] as [String?] {
        do {
            let r = try AuditExportVerifier.verify(path: scratchPath, publicKey: signer.publicKey, expectHead: expect)
            precondition(r.ok == (r.reason == nil), "ok and reason disagree: \(r)")
            precondition(r.ok == (r.firstBad == nil), "ok and first_bad disagree: \(r)")
            precondition(r.entries >= 0)
        } catch {
            // FileError: a CSV export or an unreadable file; fine.
        }
    }
    return 0
}
