import DifferentialPrivacy
import Foundation
import PostgresNIO
public import VaultStore
import VaultPolicy
import VaultValues

/// `score`'s reads on PostgreSQL, with the SQLite engine's results (VaultStore's
/// SubjectFeatures.swift): per selection one REPEATABLE READ snapshot, statements over bound
/// arrays of subject ids (at most ``statementRows`` each).
extension PostgresProfiles {
    public func subjectFeatures(_ selection: FeatureSelection, features: [FeatureColumn], consentPurpose: String?,
                                objectionPurpose: String?) throws -> [SubjectFeatureRow] {
        try schema.checkFeatureColumns(features)
        let selection = try selection.checked()
        let consentPurpose = consentPurpose.map(Self.compared), objectionPurpose = objectionPurpose.map(Self.compared)
        // Attributes as float8 (a bool as 0/1); column names validated and quoted.
        let attributeSpecs: [(name: String, column: String)] = try features.compactMap { feature in
            guard case .attribute(let name) = feature, let f = schema.attributeFields.first(where: { $0.name == name }) else { return nil }
            let c = try Self.attributeColumn(f.name)
            return (name, f.type == .bool ? "(\(c))::int::float8" : "(\(c))::float8")
        }
        let attributeNames = attributeSpecs.map(\.name), attributeCols = attributeSpecs.map(\.column)
        let attributeSQL = attributeCols.isEmpty ? nil
            : "SELECT subject_id, \(attributeCols.joined(separator: ", ")) FROM profilevault.attributes WHERE subject_id = ANY($1::bigint[])"
        // Per kind: subject_id and one aggregate per derived feature (the sum in ingest order,
        // as the aggregates add it); $1 the ids, $2 the kind, then the window ends.
        let derivedSQL: [(kind: String, sql: String, args: [Int64], attrs: [DerivedAttribute])] = features.derivedByEventKind().map { kind, attrs in
            var args: [Int64] = []
            let cols = attrs.map { d -> String in
                let window = d.windowConditions(args: &args, placeholder: { "$\($0 + 2)" })
                let filter = window.isEmpty ? "" : " FILTER (WHERE \(window.joined(separator: " AND ")))"
                switch d.aggregate {
                case .sum: return "COALESCE(sum(value ORDER BY id)\(filter), 0::float8)"
                case .count: return "(count(*)\(filter))::float8"
                case .distinctItems: return "(count(DISTINCT item)\(filter))::float8"
                }
            }
            return (kind, "SELECT subject_id, \(cols.joined(separator: ", ")) FROM profilevault.events WHERE subject_id = ANY($1::bigint[]) AND kind = $2 GROUP BY subject_id",
                    args, attrs)
        }
        typealias Fetched = (subjects: [(Int64, [UInt8])], served: Set<Int64>, attributes: [Int64: [Double?]], derived: [Int64: [String: Double]])
        let fetched: Fetched = try Self.wait("reading subjects' features") { [self] in
            try await engine.transaction("reading subjects' features", begin: Self.snapshot) { conn in
                var subjects: [(Int64, [UInt8])] = []
                switch selection {
                case .pseudonyms(let ps):
                    let ids = try await subjectIDs(conn, ps)
                    var seen = Set<[UInt8]>()
                    for p in ps where seen.insert(p).inserted {
                        if let id = ids[p] { subjects.append((id, p)) }
                    }
                case .page(let after, let limit):
                    for row in try await engine.rows(conn, "SELECT id, pseudonym FROM profilevault.subjects WHERE id > \(after) ORDER BY id LIMIT \(Int64(limit))") {
                        let (id, p) = try row.decode((Int64, ByteBuffer).self)
                        subjects.append((id, p.bytes))
                    }
                }
                let all = subjects.map(\.0).sorted()
                var served = Set(all)
                for chunk in Self.chunks(all) {
                    for row in try await engine.rows(conn, "SELECT subject_id FROM profilevault.restriction WHERE subject_id = ANY(\(chunk)::bigint[])") {
                        served.remove(try row.decode(Int64.self))
                    }
                    if let consentPurpose {
                        var granted = Set<Int64>()
                        for row in try await engine.rows(conn, """
                            SELECT subject_id FROM profilevault.consent_state WHERE purpose = \(consentPurpose) AND granted AND subject_id = ANY(\(chunk)::bigint[])
                            """) {
                            granted.insert(try row.decode(Int64.self))
                        }
                        for id in chunk where !granted.contains(id) { served.remove(id) }
                    }
                    if let objectionPurpose {
                        for row in try await engine.rows(conn, """
                            SELECT subject_id FROM profilevault.consent_state WHERE purpose = \(objectionPurpose) AND NOT granted AND subject_id = ANY(\(chunk)::bigint[])
                            """) {
                            served.remove(try row.decode(Int64.self))
                        }
                    }
                }
                let reading = served.sorted()
                var attributes: [Int64: [Double?]] = [:]
                var derived: [Int64: [String: Double]] = [:]
                for chunk in Self.chunks(reading) {
                    if let attributeSQL {
                        var binds = PostgresBindings()
                        try binds.append(chunk)
                        for row in try await engine.rows(conn, PostgresQuery(unsafeSQL: attributeSQL, binds: binds)) {
                            let cells = PostgresRandomAccessRow(row)
                            let id = try cells[0].decode(Int64.self)
                            attributes[id] = try (0..<attributeCols.count).map { try cells[$0 + 1].decode(Double?.self) }
                        }
                    }
                    for q in derivedSQL {
                        var binds = PostgresBindings()
                        try binds.append(chunk)
                        binds.append(Self.compared(q.kind))
                        for a in q.args { binds.append(a) }
                        for row in try await engine.rows(conn, PostgresQuery(unsafeSQL: q.sql, binds: binds)) {
                            let cells = PostgresRandomAccessRow(row)
                            let id = try cells[0].decode(Int64.self)
                            for (j, d) in q.attrs.enumerated() {
                                derived[id, default: [:]][d.name] = try cells[j + 1].decode(Double.self)
                            }
                        }
                    }
                }
                return (subjects, served, attributes, derived)
            }
        }
        return try fetched.subjects.map { id, p in
            guard fetched.served.contains(id) else { return SubjectFeatureRow(row: id, pseudonym: p, served: false, values: []) }
            var values: [String: Double?] = [:]
            let attrs = fetched.attributes[id]
            for (i, name) in attributeNames.enumerated() {
                let v = attrs.flatMap { i < $0.count ? $0[i] : nil }
                if let v, !v.isFinite {
                    throw VaultError(.integrity, "subject row \(id): attribute \(name) holds a value that is not a finite number: the store was altered")
                }
                values[name] = .some(v)
            }
            for case .derived(let d) in features {
                let raw = fetched.derived[id]?[d.name] ?? 0
                guard !raw.isNaN else {
                    throw VaultError(.integrity, "subject row \(id): an aggregate of its \(d.eventKind) events is not a number: the store was altered")
                }
                values[d.name] = min(d.upper, max(d.lower, raw))
            }
            return SubjectFeatureRow(row: id, pseudonym: p, served: true, values: features.map { values[$0.name] ?? nil })
        }
    }

    public func customerIDs(pseudonyms: [[UInt8]]) throws -> [[UInt8]: String] {
        guard let idColumn = piiColumns.ciphertextColumn(id: 0) else { throw VaultError(.configuration, "the schema has no customer ID field") }
        let sql = """
            SELECT s.id, s.pseudonym, s.kek_version, s.wrapped_dek, p.\(idColumn)
            FROM profilevault.subjects s JOIN profilevault.pii p ON p.subject_id = s.id WHERE s.pseudonym = ANY($1::bytea[])
            """
        let distinct = Array(Set(pseudonyms))
        let rows = try Self.wait("reading customer IDs") { [engine] in
            try await engine.transaction("reading customer IDs", begin: Self.snapshot) { conn in
                var out: [(Int64, [UInt8], Int64, [UInt8], [UInt8]?)] = []
                var start = 0
                while start < distinct.count {
                    let chunk = distinct[start..<min(start + Self.statementRows, distinct.count)].map(bytea)
                    start += chunk.count
                    var binds = PostgresBindings()
                    try binds.append(chunk)
                    for row in try await engine.rows(conn, PostgresQuery(unsafeSQL: sql, binds: binds)) {
                        let (id, p, k, w, c) = try row.decode((Int64, ByteBuffer, Int64, ByteBuffer, ByteBuffer?).self)
                        out.append((id, p.bytes, k, w.bytes, c?.bytes))
                    }
                }
                return out
            }
        }
        var out: [[UInt8]: String] = [:]
        for (id, p, k, w, blob) in rows {
            let s = Subject(id: id, pseudonym: p, kekVersion: k, wrappedDEK: w)
            guard let blob else { throw VaultError(.integrity, "subject row \(id): the customer ID's ciphertext is missing: the store was altered") }
            out[p] = try openPII(blob, field: schema.subjectIDField, subject: s, dek: try dek(s))
        }
        return out
    }
}
