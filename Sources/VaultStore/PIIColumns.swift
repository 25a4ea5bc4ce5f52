import GRDB
public import VaultPolicy

/// The layout of the `pii` table (store format 3): one row per subject, keyed by
/// `subject_id INTEGER PRIMARY KEY`, with a ciphertext column `c<id>` per PII field (id 0 is the
/// customer ID, then the schema's PII fields in order: the ids of the `pii_fields` table) and,
/// per lookup field, its blind-index MAC in `m<id>` with a partial index `pii_m<id>`.
///
/// A row per subject instead of a row per field (and a separate blind-index table with its own
/// subject index) is what bulk ingest pays least for: one table row and one index entry per
/// lookup field (docs/benchmarks.md). Absent values are NULL. Column names carry ids, never
/// field names, so a schema's field names need no quoting here.
package struct PIIColumns: Sendable {
    package struct Column: Sendable {
        package let id: Int
        package let field: String
        package let column: String
    }
    /// Every PII field's ciphertext column, by id (the customer ID first).
    package let ciphertext: [Column]
    /// The lookup fields' MAC columns, by id.
    package let macs: [Column]

    /// PII field name and id: the customer ID is 0, the schema's PII fields 1, 2, ... in order.
    package static func fieldIDs(_ schema: Schema) -> [(String, Int)] {
        [(schema.subjectIDField, 0)] + schema.piiFields.enumerated().map { ($1.name, $0 + 1) }
    }

    package init(schema: Schema) {
        let lookup = Set(schema.fields.filter { $0.pii && $0.lookup }.map(\.name))
        let ids = Self.fieldIDs(schema)
        ciphertext = ids.map { Column(id: $1, field: $0, column: "c\($1)") }
        macs = ids.filter { lookup.contains($0.0) }.map { Column(id: $1, field: $0, column: "m\($1)") }
    }

    /// Column definitions for CREATE TABLE.
    var tableColumns: String {
        (["subject_id INTEGER PRIMARY KEY"] + (ciphertext + macs).map { "\($0.column) BLOB" }).joined(separator: ", ")
    }

    /// The blind indexes: one partial index per lookup field.
    var indexDefinitions: String {
        macs.map { "CREATE INDEX pii_\($0.column) ON pii(\($0.column)) WHERE \($0.column) IS NOT NULL;" }.joined(separator: "\n")
    }

    /// Every column after `subject_id`, in table order (ciphertexts, then MACs).
    package var valueColumns: [Column] { ciphertext + macs }

    /// The name of a PII field's ciphertext column, and of its MAC column (lookup fields only), by field id.
    package func ciphertextColumn(id: Int) -> String? { ciphertext.first { $0.id == id }?.column }
    package func macColumn(id: Int) -> String? { macs.first { $0.id == id }?.column }

    /// Two SQL expressions over a `pii` row: how many encrypted fields it holds and how many
    /// blind-index entries (the counts an erasure reports).
    package var storedCountExpressions: (fields: String, macs: String) {
        func sum(_ cs: [Column]) -> String { cs.isEmpty ? "0" : cs.map { "(\($0.column) IS NOT NULL)" }.joined(separator: " + ") }
        return (sum(ciphertext), sum(macs))
    }
}

extension ProfileStore {
    /// Stored row counts, without decrypting: subjects, encrypted PII fields, blind-index
    /// entries, attribute rows, events (for tests; `erase` receipts count one row with `storedCountExpressions`).
    func storedCounts() throws -> [Int] {
        let (f, m) = piiColumns.storedCountExpressions
        return try pool.read { db in
            [try Int.fetchOne(db, sql: "SELECT count(*) FROM subjects") ?? -1,
             try Int.fetchOne(db, sql: "SELECT coalesce(sum(\(f)), 0) FROM pii") ?? -1,
             try Int.fetchOne(db, sql: "SELECT coalesce(sum(\(m)), 0) FROM pii") ?? -1,
             try Int.fetchOne(db, sql: "SELECT count(*) FROM attributes") ?? -1,
             try Int.fetchOne(db, sql: "SELECT count(*) FROM events") ?? -1]
        }
    }
}
