import Foundation
import Testing
import VaultAudit
import VaultPolicy
@testable import ProfileVault
@testable import VaultStore

/// Issue 17.8: a field may not share a name with a key the product writes beside the fields in
/// `get` and `export` answers; the answers of the shipped schema have no duplicate key.
@Suite struct SchemaCollisionTests {
    /// The top-level keys of a rendered answer; parsing refuses a duplicate key.
    static func topKeys(_ doc: JSONValue) throws -> [String] {
        let parsed = try JSONValue.parse(doc.rendered(pretty: true))
        guard case .object(let pairs) = parsed else { Issue.record("not an object"); return [] }
        return pairs.map(\.0)
    }

    @Test func getAndExportOfTheShippedSchemaHaveNoDuplicateKeysAndEveryProductKeyIsReserved() throws {
        let f = try VaultFixture()
        let officer = try f.vault("privacy_officer")
        _ = try officer.setConsent(.one("C1"), purpose: "analytics", granted: true, source: "app")
        let view = try f.vault("support").get(customerID: "C1", purpose: "customer_support")
        let export = try officer.accessExport(customerID: "C1")
        let schema = try PolicyLoader.loadSchema(path: f.policies + "/schema.yaml")
        let fieldNames = Set(schema.fields.map(\.name))
        for doc in [JSONForms.profile(view), JSONForms.accessExport(export)] {
            let keys = try Self.topKeys(doc)            // throws on a duplicate key
            #expect(Set(keys).count == keys.count)
            // Every key that is not a field of the schema is the product's own: it must be
            // reserved, or a schema could declare a field of that name and collide with it.
            let productKeys = Set(keys).subtracting(fieldNames)
            #expect(productKeys.isSubset(of: Schema.reservedFieldNames), "unreserved: \(productKeys.subtracting(Schema.reservedFieldNames).sorted())")
        }
        // The customer's values are all there, under their own names.
        #expect(try Self.topKeys(JSONForms.accessExport(export)).filter(fieldNames.contains).count == fieldNames.count)
    }

    @Test(arguments: ["customer_id", "pseudonym", "consent", "events", "subject", "privacy", "access_log", "created_at"])
    func aFieldNamedLikeAProductKeyIsRefusedAtLoad(_ name: String) throws {
        // A subject_id field of another name, so that customer_id is an ordinary field name here.
        let yaml = """
            version: 1
            subject_id: { field: client_ref, category: user.unique_id }
            fields:
              age: { type: int, category: user.demographic.age_range, bounds: [18, 100] }
              \(name): { type: bool, category: user.privacy_preferences }

            """
        do {
            _ = try PolicyLoader.parseSchema(yaml: yaml, file: "schema.yaml")
            Issue.record("a field named \(name) loaded")
        } catch {
            #expect(error.file == "schema.yaml" && error.line == 5 && error.field == "fields.\(name)", "\(error)")
            #expect(error.reason.contains("rename the field"), "\(error)")
        }
    }
}
