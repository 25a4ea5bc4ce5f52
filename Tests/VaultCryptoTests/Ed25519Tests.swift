import Testing
import VaultCrypto

@Suite("Ed25519")
struct Ed25519Tests {
    @Test func rfc8032TestVector1() throws {
        let key = try Ed25519PrivateKey(seed: SecureBytes(hexBytes("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")))
        #expect(key.publicKey.rawRepresentation == hexBytes("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"))
        let signature = try key.signature(for: [])
        #expect(signature == hexBytes("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"))
        #expect(key.publicKey.isValidSignature(signature, for: []))
        #expect(!key.publicKey.isValidSignature(signature, for: [0]))
    }

    @Test func signVerifyAndTampering() throws {
        let key = try Ed25519PrivateKey(seed: .random(count: 32))
        let message = Array("audit head 42 9f86d081884c7d65".utf8)
        let signature = try key.signature(for: message)
        #expect(signature.count == 64)
        #expect(key.publicKey.isValidSignature(signature, for: message))
        var tamperedMessage = message; tamperedMessage[0] ^= 1
        #expect(!key.publicKey.isValidSignature(signature, for: tamperedMessage))
        var tamperedSignature = signature; tamperedSignature[63] ^= 1
        #expect(!key.publicKey.isValidSignature(tamperedSignature, for: message))
        #expect(!key.publicKey.isValidSignature(Array(signature.prefix(63)), for: message))
        let other = try Ed25519PrivateKey(seed: .random(count: 32))
        #expect(!other.publicKey.isValidSignature(signature, for: message))
    }

    @Test func pemRoundTrip() throws {
        let key = try Ed25519PrivateKey(seed: .random(count: 32))
        let pem = key.publicKey.pemRepresentation
        #expect(pem.hasPrefix("-----BEGIN PUBLIC KEY-----\n"))
        #expect(pem.hasSuffix("-----END PUBLIC KEY-----\n"))
        let parsed = try Ed25519PublicKey(pemRepresentation: pem)
        #expect(parsed == key.publicKey)
        let signature = try key.signature(for: [1, 2, 3])
        #expect(parsed.isValidSignature(signature, for: [1, 2, 3]))
        let fromRaw = try Ed25519PublicKey(rawRepresentation: key.publicKey.rawRepresentation)
        #expect(fromRaw.pemRepresentation == pem)
    }

    @Test func rfc8032VectorPEMIsTheStandardEncoding() throws {
        let key = try Ed25519PublicKey(rawRepresentation: hexBytes("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"))
        #expect(key.pemRepresentation == "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----\n")
    }

    @Test func rejectsBadInputs() throws {
        #expect(throws: CryptoError.invalidKeySize(31)) { try Ed25519PrivateKey(seed: .random(count: 31)) }
        #expect(throws: CryptoError.invalidKeySize(33)) { try Ed25519PublicKey(rawRepresentation: [UInt8](repeating: 1, count: 33)) }
        #expect(throws: CryptoError.self) { try Ed25519PublicKey(pemRepresentation: "not a pem") }
        // An RSA/EC public key PEM is refused (this is a P-256 key).
        let p256 = """
            -----BEGIN PUBLIC KEY-----
            MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEYP7UuiVanTHJYet0xjVtaMBJuJI7
            Yfps5mliLmDyn7Z5A/4QCLi8maQa6elWKLxk8vGyDC1+n1F3o8KU1EYimQ==
            -----END PUBLIC KEY-----
            """
        #expect(throws: CryptoError.self) { try Ed25519PublicKey(pemRepresentation: p256) }
    }
}
