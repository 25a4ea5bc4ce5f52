public import DifferentialPrivacy
import GRDB
import Foundation
import VaultPolicy

// MARK: - A subject's feature values (for `score`)

/// One feature a model reads for a subject: a numeric attribute of the schema (int, float,
/// bool or date; never a PII field) or a job-declared per-subject event aggregate.
public enum FeatureColumn: Sendable, Equatable, Hashable {
    case attribute(String)
    case derived(DerivedAttribute)

    public var name: String {
        switch self {
        case .attribute(let n): n
        case .derived(let d): d.name
        }
    }
}

/// Which subjects `subjectFeatures` reads: the subjects of these pseudonyms (unknown ones are
/// left out), or a page of every subject in row order (keyset pagination: the rows after
/// `after`, at most `limit` of them, served or not).
public enum FeatureSelection: Sendable, Equatable {
    case pseudonyms([[UInt8]])
    case page(after: Int64, limit: Int)
}

/// One existing subject's feature values as `score` needs them. Nothing here is released to
/// anyone: the caller computes a score, audits the read and shows only the score.
public struct SubjectFeatureRow: Sendable, Equatable {
    /// The subject's row id (the page key; not shown to anyone).
    public var row: Int64
    public var pseudonym: [UInt8]
    /// Consent for the purpose (true when none is needed), not restricted (Art. 18), not
    /// objecting to the objection purpose (Art. 21).
    public var served: Bool
    /// In feature order when served (empty otherwise): an attribute's stored value (nil when
    /// null), a derived feature's aggregate clamped to its bounds (0 without events, clamped).
    public var values: [Double?]
    public init(row: Int64, pseudonym: [UInt8], served: Bool, values: [Double?]) {
        self.row = row
        self.pseudonym = pseudonym
        self.served = served
        self.values = values
    }
}

/// The largest page `subjectFeatures(.page)` reads.
package let maxFeaturePage = 10_000

extension Schema {
    /// Checks a score's feature list against the schema (usage error otherwise): 1 to 1,024
    /// features, each a numeric non-PII attribute or a derived aggregate of an event kind of
    /// the schema with finite bounds lower < upper and a name that is no field.
    package func checkFeatureColumns(_ features: [FeatureColumn]) throws {
        guard (1...1024).contains(features.count) else { throw VaultError(.usage, "a score reads 1 to 1024 features") }
        for f in features {
            switch f {
            case .attribute(let name):
                guard let spec = attributeFields.first(where: { $0.name == name }), [.int, .float, .bool, .date].contains(spec.type) else {
                    throw VaultError(.usage, "\(name) is not a numeric attribute of the schema")
                }
            case .derived(let d):
                guard field(named: d.name) == nil, eventKind(named: d.eventKind) != nil else {
                    throw VaultError(.usage, "derived feature \(d.name) is a field of the schema or counts an unknown event kind")
                }
                guard d.lower.isFinite, d.upper.isFinite, d.lower < d.upper else {
                    throw VaultError(.usage, "derived feature \(d.name) needs finite bounds lower < upper")
                }
            }
        }
    }
}

extension Array where Element == FeatureColumn {
    /// The derived features grouped by event kind, kinds in order of first mention: each
    /// engine reads one kind's aggregates with one statement.
    package func derivedByEventKind() -> [(kind: String, features: [DerivedAttribute])] {
        var kinds: [String] = []
        var byKind: [String: [DerivedAttribute]] = [:]
        for case .derived(let d) in self {
            if byKind[d.eventKind] == nil { kinds.append(d.eventKind) }
            byKind[d.eventKind, default: []].append(d)
        }
        return kinds.map { ($0, byKind[$0] ?? []) }
    }
}

extension DerivedAttribute {
    /// The feature's time window as SQL conditions on `time` (none without bounds), its bounds
    /// appended to `args` in the conditions' order; `placeholder` names the argument just
    /// appended (given the new count): `?` on SQLite, `$N` on PostgreSQL.
    package func windowConditions(args: inout [Int64], placeholder: (Int) -> String) -> [String] {
        var window: [String] = []
        if let from { args.append(from); window.append("time >= \(placeholder(args.count))") }
        if let before { args.append(before); window.append("time < \(placeholder(args.count))") }
        return window
    }
}

extension FeatureSelection {
    package func checked() throws -> FeatureSelection {
        if case .page(_, let limit) = self, !(1...maxFeaturePage).contains(limit) {
            throw VaultError(.usage, "a page of subjects holds 1 to \(maxFeaturePage) rows")
        }
        return self
    }
}

extension ProfileStore {
    /// Each selected subject's feature values (`FeatureColumn`), with whether it may be served
    /// under the purpose (`SubjectFeatureRow.served`), from one read transaction. Only served
    /// subjects' attributes and events are read. Rows come in row order for a page and in the
    /// order of first mention for pseudonyms (each subject once).
    public func subjectFeatures(_ selection: FeatureSelection, features: [FeatureColumn], consentPurpose: String?,
                                objectionPurpose: String?) throws -> [SubjectFeatureRow] {
        try schema.checkFeatureColumns(features)
        let selection = try selection.checked()
        let attributeNames = features.compactMap { if case .attribute(let n) = $0 { n } else { nil } }
        let attributeSQL = attributeNames.isEmpty ? nil
            : "SELECT \(attributeNames.map(Self.quoted).joined(separator: ", ")) FROM attributes WHERE subject_id = ?"
        // One statement per event kind: every derived aggregate of that kind for one subject.
        let derivedSQL: [(kind: String, sql: String, args: [Int64], attrs: [DerivedAttribute])] = features.derivedByEventKind().map { kind, attrs in
            var args: [Int64] = []
            let cols = attrs.map { d -> String in
                let w = d.windowConditions(args: &args, placeholder: { _ in "?" }).joined(separator: " AND ")
                switch d.aggregate {
                case .sum: return w.isEmpty ? "TOTAL(value)" : "TOTAL(CASE WHEN \(w) THEN value END)"
                case .count: return w.isEmpty ? "COUNT(*)" : "COUNT(CASE WHEN \(w) THEN 1 END)"
                case .distinctItems: return w.isEmpty ? "COUNT(DISTINCT item)" : "COUNT(DISTINCT CASE WHEN \(w) THEN item END)"
                }
            }
            return (kind, "SELECT \(cols.joined(separator: ", ")) FROM events WHERE subject_id = ? AND kind = ?", args, attrs)
        }
        return try pool.read { db in
            var subjects: [(Int64, [UInt8])] = []
            switch selection {
            case .pseudonyms(let ps):
                var seen = Set<[UInt8]>()
                for p in ps where seen.insert(p).inserted {
                    if let s = try subjectRow(db, pseudonym: p) { subjects.append((s.id, p)) }
                }
            case .page(let after, let limit):
                for row in try Row.fetchAll(db.cachedStatement(sql: "SELECT id, pseudonym FROM subjects WHERE id > ? ORDER BY id LIMIT ?"),
                                            arguments: [after, limit]) {
                    guard let id = Stored.int(row.stored(at: 0)) else { throw VaultError(.integrity, "a subject row id holds \(Stored.kind(row.stored(at: 0))): the store was altered") }
                    guard let p = Stored.blob(row.stored(at: 1)) else { throw Stored.damaged(subject: id, "the pseudonym column", row.stored(at: 1), expected: "a blob") }
                    subjects.append((id, p))
                }
            }
            let consentStatement = try db.cachedStatement(sql: "SELECT granted FROM consent_state WHERE purpose = ? AND subject_id = ?")
            return try subjects.map { id, p in
                var served = try !isRestricted(db, subjectID: id)
                if served, let consentPurpose {
                    served = try Bool.fetchOne(consentStatement, arguments: [consentPurpose, id]) ?? false
                }
                if served, let objectionPurpose {
                    served = try Bool.fetchOne(consentStatement, arguments: [objectionPurpose, id]) != false
                }
                guard served else { return SubjectFeatureRow(row: id, pseudonym: p, served: false, values: []) }
                var values: [String: Double?] = [:]
                if let attributeSQL {
                    let row = try Row.fetchOne(db.cachedStatement(sql: attributeSQL), arguments: [id])
                    for (i, name) in attributeNames.enumerated() {
                        let v = row?.stored(at: i) ?? .null
                        if v.isNull { values[name] = .some(nil); continue }
                        guard let x = Stored.number(v), x.isFinite else {
                            throw Stored.damaged(subject: id, "attribute \(name)", v, expected: "a number")
                        }
                        values[name] = x
                    }
                }
                for q in derivedSQL {
                    let row = try Row.fetchOne(db.cachedStatement(sql: q.sql),
                                               arguments: StatementArguments(q.args.map { $0.databaseValue } + [id.databaseValue, q.kind.databaseValue]))
                    for (j, d) in q.attrs.enumerated() {
                        let v = row?.stored(at: j) ?? .null
                        guard let raw = v.isNull ? 0 : Stored.number(v), !raw.isNaN else {
                            throw Stored.damaged(subject: id, "an aggregate of its \(q.kind) events", v, expected: "a number")
                        }
                        values[d.name] = min(d.upper, max(d.lower, raw))
                    }
                }
                return SubjectFeatureRow(row: id, pseudonym: p, served: true, values: features.map { values[$0.name] ?? nil })
            }
        }
    }

    /// The customer IDs (decrypted from the subjects' sealed ID field) of these pseudonyms;
    /// a pseudonym without a subject (erased meanwhile) is left out.
    public func customerIDs(pseudonyms: [[UInt8]]) throws -> [[UInt8]: String] {
        guard let idColumn = piiColumns.ciphertextColumn(id: piiFieldIDs[schema.subjectIDField] ?? 0) else {
            throw VaultError(.configuration, "the schema has no customer ID field")
        }
        return try pool.read { db in
            var out: [[UInt8]: String] = [:]
            for p in Set(pseudonyms) {
                guard let s = try subjectRow(db, pseudonym: p),
                      let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT \(idColumn) FROM pii WHERE subject_id = ?"), arguments: [s.id]) else { continue }
                guard let blob = Stored.blob(row.stored(at: 0)) else {
                    throw Stored.damaged(subject: s.id, "the ciphertext of field \(schema.subjectIDField)", row.stored(at: 0), expected: "a blob")
                }
                out[p] = try openPII(blob, field: schema.subjectIDField, subject: s, dek: try dek(for: s))
            }
            return out
        }
    }
}
