import Foundation
public import GRDB
public import VaultAudit

/// One policy the store has run under: a row of the append-only `policy_history` table.
public struct PolicyRecord: Sendable, Equatable {
    public var sequence: Int64
    /// The policy's `version:`.
    public var version: String
    /// SHA-256 (hex) of policy.yaml and of schema.yaml, as the files' bytes.
    public var sha256: String
    public var schemaSHA256: String
    /// Unix milliseconds.
    public var appliedAtMillis: Int64
    public var actor: String
    public var role: String
    /// What the policy grants (purposes, budgets, roles, retention), as JSON written by the
    /// caller: the next record's diff is computed against it.
    public var summary: String
    /// The changes from the previous record, as a JSON array written by the caller.
    public var changes: String

    public init(sequence: Int64, version: String, sha256: String, schemaSHA256: String, appliedAtMillis: Int64, actor: String,
                role: String, summary: String, changes: String) {
        self.sequence = sequence
        self.version = version
        self.sha256 = sha256
        self.schemaSHA256 = schemaSHA256
        self.appliedAtMillis = appliedAtMillis
        self.actor = actor
        self.role = role
        self.summary = summary
        self.changes = changes
    }
}

extension ProfileStore {
    static func registerPolicyMigration(_ m: inout DatabaseMigrator) {
        m.registerMigration("v7-budget-delta-and-policy-history") { db in
            // The budget ledger keeps delta beside epsilon, and each row records the period
            // length it was charged under (so a changed period still counts it: DPSource.swift).
            // Existing rows: delta 0, period length 0 ("unknown") until the first policy record
            // sets it to that policy's period.
            try db.execute(sql: """
                CREATE TABLE budget_v7(
                    purpose TEXT NOT NULL, period_start INTEGER NOT NULL, period_seconds INTEGER NOT NULL,
                    spent_units INTEGER NOT NULL, spent_delta_units INTEGER NOT NULL DEFAULT 0,
                    PRIMARY KEY(purpose, period_start, period_seconds)) WITHOUT ROWID;
                INSERT INTO budget_v7(purpose, period_start, period_seconds, spent_units, spent_delta_units)
                    SELECT purpose, period_start, 0, spent_units, 0 FROM budget;
                DROP TABLE budget;
                ALTER TABLE budget_v7 RENAME TO budget;
                CREATE TABLE policy_history(
                    seq INTEGER PRIMARY KEY, version TEXT NOT NULL, sha256 TEXT NOT NULL, schema_sha256 TEXT NOT NULL,
                    applied_at INTEGER NOT NULL, actor TEXT NOT NULL, role TEXT NOT NULL,
                    summary TEXT NOT NULL, changes TEXT NOT NULL);
                CREATE TRIGGER policy_history_no_update BEFORE UPDATE ON policy_history
                    BEGIN SELECT RAISE(ABORT, 'the policy history is append-only'); END;
                CREATE TRIGGER policy_history_no_delete BEFORE DELETE ON policy_history
                    BEGIN SELECT RAISE(ABORT, 'the policy history is append-only'); END;
                """)
        }
    }

    static func policyRecord(_ row: Row) throws -> PolicyRecord {
        guard let seq = row.auditInt("seq"), let version = row.auditText("version"), let sha = row.auditText("sha256"),
              let schemaSHA = row.auditText("schema_sha256"), let at = row.auditInt("applied_at"), let actor = row.auditText("actor"),
              let role = row.auditText("role"), let summary = row.auditText("summary"), let changes = row.auditText("changes") else {
            throw VaultError(.integrity, "the policy history holds a value of the wrong type: the file was edited")
        }
        return PolicyRecord(sequence: seq, version: version, sha256: sha, schemaSHA256: schemaSHA, appliedAtMillis: at, actor: actor,
                            role: role, summary: summary, changes: changes)
    }

    /// The policy in force: the newest record (nil: none recorded yet).
    static func latestPolicy(_ db: Database) throws -> PolicyRecord? {
        guard try db.tableExists("policy_history") else { return nil }
        return try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM policy_history ORDER BY seq DESC LIMIT 1")).map { try policyRecord($0) }
    }

    /// The policy in force (nil: none recorded yet).
    public func latestPolicy() throws -> PolicyRecord? {
        try pool.read { db in try Self.latestPolicy(db) }
    }

    /// Every policy the store has run under, oldest first.
    public func policyHistory() throws -> [PolicyRecord] {
        try pool.read { db in try Self.policyHistory(db) }
    }

    static func policyHistory(_ db: Database) throws -> [PolicyRecord] {
        guard try db.tableExists("policy_history") else { return [] }
        return try Row.fetchAll(db, sql: "SELECT * FROM policy_history ORDER BY seq").map { try policyRecord($0) }
    }

    /// The policy history read without any key (for `status` and `policy status|history`).
    public static func policyHistory(path: String) throws -> [PolicyRecord] {
        let pool = try openPool(path: path)
        defer { try? pool.close() }
        return try pool.read { db in try policyHistory(db) }
    }

    /// Records `record` (its sequence and time are assigned here) as the policy in force, in one
    /// transaction with its audit entry and the meta `policy_version`. Refused (configuration)
    /// when the newest record is no longer `previous` (another apply came first: the caller's
    /// diff would be against the wrong policy). Budget rows charged before period lengths were
    /// recorded take their purpose's period from `periods` (the policy recorded now).
    public func recordPolicy(_ record: PolicyRecord, previous: Int64?, periods: [String: Int], audit: AuditRecord) throws -> PolicyRecord {
        try StoredText.checkPolicyRecord(version: record.version, actor: record.actor, role: record.role, summary: record.summary, changes: record.changes)
        return try pool.writeWithoutTransaction { db -> PolicyRecord in
            var out = record
            try db.inTransaction(.immediate) {
                guard try Self.latestPolicy(db)?.sequence == previous else {
                    throw VaultError(.configuration, "another policy was recorded meanwhile; run the command again")
                }
                for (purpose, seconds) in periods.sorted(by: { $0.key < $1.key }) {
                    try db.execute(sql: "UPDATE OR IGNORE budget SET period_seconds = ? WHERE purpose = ? AND period_seconds = 0",
                                   arguments: [Int64(seconds), purpose])
                }
                out.appliedAtMillis = AuditLog.nowMillis
                try db.execute(sql: """
                    INSERT INTO policy_history(version, sha256, schema_sha256, applied_at, actor, role, summary, changes)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    """, arguments: [out.version, out.sha256, out.schemaSHA256, out.appliedAtMillis, out.actor, out.role, out.summary, out.changes])
                out.sequence = db.lastInsertedRowID
                try db.execute(sql: "INSERT OR REPLACE INTO meta(key, value) VALUES ('policy_version', ?)", arguments: [out.version])
                try appendAudit(db, [audit])
                return .commit
            }
            return out
        }
    }
}
