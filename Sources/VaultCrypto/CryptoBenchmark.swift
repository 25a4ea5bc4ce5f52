/// Single-threaded AES-256-GCM sealing throughput, for `pvbench` and bench/crypto-bench.sh.
public enum CryptoBenchmark {
    /// How each sealed message gets its nonce.
    public enum NonceMode: String, Sendable, CaseIterable {
        /// A fresh random 96-bit nonce per seal (``SecureRandom/fillNonce(_:)``), as the store does.
        case random
        /// A 96-bit counter (no RNG call): the cost of the cipher alone.
        case counter
        /// The whole ``Envelope/sealField(_:field:subject:dek:)`` call: random nonce, AAD
        /// construction, version byte, one array allocation per blob.
        case envelope
    }

    /// Seals `bytes`-byte messages with AES-256-GCM for about `seconds` and returns seals per
    /// second (single thread, fresh random nonce per seal, 50 bytes of AAD like a field blob's).
    public static func sealThroughput(bytes: Int, seconds: Double) -> Double {
        sealThroughput(bytes: bytes, seconds: seconds, nonce: .random)
    }

    /// As ``sealThroughput(bytes:seconds:)`` with a choice of nonce source.
    public static func sealThroughput(bytes: Int, seconds: Double, nonce mode: NonceMode) -> Double {
        precondition(bytes >= 0 && seconds > 0)
        guard let key = try? AESGCMKey(.random(count: 32)) else { return 0 }
        let plaintext = SecureRandom.bytes(bytes)
        let subject = SecureRandom.bytes(Envelope.subjectByteCount)
        let field = "email"
        // Same size as the field AAD: "pv:field:v1" 0x00 version subject(32) "email" = 50 bytes.
        let aad = SecureRandom.bytes(11 + 2 + 32 + field.utf8.count)
        var out: [UInt8] = []
        out.reserveCapacity(bytes + Envelope.overheadByteCount)
        var nonce: [UInt8] = [UInt8](repeating: 0, count: AESGCMKey.nonceByteCount)
        var counter: UInt64 = 0
        var checksum: UInt8 = 0  // keeps the optimiser honest

        let clock = ContinuousClock()
        let start = clock.now
        let budget = Duration.nanoseconds(Int64(seconds * 1e9))
        var operations = 0
        var elapsed = Duration.zero
        let batch = 256
        while elapsed < budget {
            for _ in 0..<batch {
                switch mode {
                case .envelope:
                    guard let blob = try? Envelope.sealField(plaintext, field: field, subject: subject, dek: key) else { return 0 }
                    checksum &+= blob[blob.count - 1]
                case .random, .counter:
                    nonce.withUnsafeMutableBytes { n in
                        if mode == .random {
                            SecureRandom.fillNonce(n)
                        } else {
                            counter &+= 1
                            n.storeBytes(of: counter.bigEndian, toByteOffset: 4, as: UInt64.self)
                        }
                    }
                    out.removeAll(keepingCapacity: true)
                    let ok: Bool = plaintext.withUnsafeBytes { p in
                        nonce.withUnsafeBytes { n in
                            aad.withUnsafeBytes { a in
                                (try? key.seal(p, nonce: n, aad: a, appendingTo: &out)) != nil
                            }
                        }
                    }
                    guard ok else { return 0 }
                    checksum &+= out[out.count - 1]
                }
            }
            operations += batch
            elapsed = clock.now - start
        }
        if checksum == 0 && operations == -1 { print("") }
        let (s, attoseconds) = elapsed.components
        return Double(operations) / (Double(s) + Double(attoseconds) * 1e-18)
    }
}
