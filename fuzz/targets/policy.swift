// libFuzzer target: the schema.yaml and policy.yaml loaders (Sources/VaultPolicy, with Yams
// linked from the SwiftPM build in .build-rel). The first input byte picks the file: even =
// schema.yaml, odd = policy.yaml (checked against the repository's default schema).
// Properties: no crash or hang; a refusal is a PolicyDiagnostic whose text names the file; a
// schema that loads is accepted again when loaded a second time (determinism).
import Foundation

let defaultSchema: Schema = {
    let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let text = try! String(contentsOf: here.appendingPathComponent("policies/schema.yaml"), encoding: .utf8)
    return try! PolicyLoader.parseSchema(yaml: text, file: "policies/schema.yaml")
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size >= 1 else { return 0 }
    guard let text = String(validating: UnsafeBufferPointer(start: data + 1, count: size - 1), as: UTF8.self) else { return 0 }
    if data[0] % 2 == 0 {
        do {
            let s = try PolicyLoader.parseSchema(yaml: text, file: "fuzz/schema.yaml")
            let again = try? PolicyLoader.parseSchema(yaml: text, file: "fuzz/schema.yaml")
            precondition(again != nil && again!.fields.count == s.fields.count, "schema loading is not deterministic")
        } catch {
            precondition("\(error)".contains("fuzz/schema.yaml"), "diagnostic does not name the file: \(error)")
        }
    } else {
        do {
            _ = try PolicyLoader.parsePolicy(yaml: text, file: "fuzz/policy.yaml", schema: defaultSchema)
        } catch {
            precondition("\(error)".contains("fuzz/policy.yaml"), "diagnostic does not name the file: \(error)")
        }
    }
    return 0
}
