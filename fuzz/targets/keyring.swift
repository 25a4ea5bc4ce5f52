// libFuzzer target: the keyring file parser (Keyring.load in Sources/VaultCrypto/Keyring.swift).
// The input is written to a mode-0600 file and loaded. Properties: no crash; a refusal is a
// KeyringError; a keyring that loads survives write + load with the same versions and active
// version, and an error message never contains a 64-hex-digit secret from the input.
#if canImport(Glibc)
import Glibc
#endif
import Foundation

let base = "/tmp/pv-fuzz-keyring-\(getpid())"

func writeFile(_ path: String, _ data: UnsafePointer<UInt8>, _ size: Int) {
    unlink(path)
    let fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0o600)
    precondition(fd >= 0)
    var off = 0
    while off < size {
        let n = write(fd, data + off, size - off)
        precondition(n > 0)
        off += n
    }
    close(fd)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let path = base + ".json"
    writeFile(path, data, size)
    let k: Keyring
    do {
        k = try Keyring.load(path: path)
    } catch {
        let message = "\(error)"
        // No secret-looking run of 64 hex digits from the input may appear in the message.
        let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
        var run = ""
        for ch in text {
            if ch.isHexDigit { run.append(ch) } else { run = "" }
            if run.count == 64 {
                precondition(!message.contains(run), "the error message echoes a key secret: \(message)")
                run.removeFirst()
            }
        }
        return 0
    }
    let copy = base + ".copy.json"
    unlink(copy)
    do {
        let written = try k.write(to: copy)
        let again = try Keyring.load(path: copy)
        precondition(again.versions == k.versions && again.active == k.active && written.versions == k.versions,
                     "write + load changed the keyring")
    } catch {
        fatalError("a keyring that loaded cannot be written and loaded again: \(error)")
    }
    return 0
}
