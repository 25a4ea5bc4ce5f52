import Foundation
import PostgresNIO
import VaultAudit
import VaultCrypto

/// One versioned schema change: its statements run in one transaction, with the row that
/// records it in `profilevault.schema_migrations`.
struct PostgresMigration: Sendable {
    let version: Int32
    let name: String
    let statements: [PostgresQuery]
}

extension PostgresEngine {
    /// Lock keys (`pg_advisory_xact_lock(namespace, key)`): migrations, and one lock per budget purpose.
    static let lockNamespaceMigrations: Int32 = 0x5056_4D00   // "PVM"
    static let lockNamespaceBudget: Int32 = 0x5056_4200       // "PVB"

    /// The migrations, oldest first. Never edit one that has shipped: add the next version.
    static let migrations: [PostgresMigration] = [
        PostgresMigration(version: 1, name: "meta-and-audit-chain", statements: [
            "CREATE TABLE profilevault.meta(key text PRIMARY KEY, value text NOT NULL)",
            // The audit chain, as the SQLite store keeps it: the entry's canonical JSON as text
            // (its bytes are what the hash covers, so not jsonb, which would reformat it), the
            // hash of the entry before it and its own; `subject` indexes access exports.
            """
            CREATE TABLE profilevault.audit_log(
                seq bigint PRIMARY KEY CHECK (seq >= 1), time bigint NOT NULL, entry text NOT NULL,
                prev_hash bytea NOT NULL CHECK (length(prev_hash) = 32), hash bytea NOT NULL CHECK (length(hash) = 32),
                subject bytea)
            """,
            "CREATE INDEX audit_log_time ON profilevault.audit_log(time)",
            "CREATE INDEX audit_log_subject ON profilevault.audit_log(subject) WHERE subject IS NOT NULL",
            """
            CREATE TABLE profilevault.audit_checkpoints(
                seq bigint PRIMARY KEY CHECK (seq >= 1), hash bytea NOT NULL, signature bytea NOT NULL, time bigint NOT NULL,
                checkpoint_time bigint, prev_seq bigint, prev_digest bytea)
            """,
            // One row: the newest entry of the cluster's one chain. Every append locks it (FOR
            // UPDATE), so appends from all nodes serialise on it.
            """
            CREATE TABLE profilevault.audit_head(
                id smallint PRIMARY KEY CHECK (id = 1), seq bigint NOT NULL CHECK (seq >= 0),
                hash bytea NOT NULL CHECK (length(hash) = 32), time bigint NOT NULL)
            """,
            "INSERT INTO profilevault.audit_head(id, seq, hash, time) VALUES (1, 0, decode(repeat('00', 32), 'hex'), 0)",
            // The second wall behind REVOKE: even a role holding UPDATE or DELETE (the owner)
            // cannot rewrite the chain without first disabling these triggers. They raise
            // P0001, not 42501, so a test can tell them from the privilege check. Every trigger
            // function runs with its own search_path (pg_catalog, pg_temp): the session's
            // search_path cannot hand its comparisons to an operator in a schema the caller
            // can write (a service role with CREATE on public could otherwise define
            // `public.<(bigint, bigint)` and make the ledger shrink).
            """
            CREATE FUNCTION profilevault.refuse_audit_change() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
            BEGIN
                RAISE EXCEPTION 'the audit log is append-only';
            END $$
            """,
            """
            CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON profilevault.audit_log
                FOR EACH ROW EXECUTE FUNCTION profilevault.refuse_audit_change()
            """,
            """
            CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON profilevault.audit_log
                FOR EACH STATEMENT EXECUTE FUNCTION profilevault.refuse_audit_change()
            """,
            """
            CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON profilevault.audit_checkpoints
                FOR EACH ROW EXECUTE FUNCTION profilevault.refuse_audit_change()
            """,
            """
            CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON profilevault.audit_checkpoints
                FOR EACH STATEMENT EXECUTE FUNCTION profilevault.refuse_audit_change()
            """,
            // The head only moves forward, onto an entry that exists with that hash: the
            // service role (which must UPDATE it) cannot rewind it or point it elsewhere.
            """
            CREATE FUNCTION profilevault.audit_head_advances() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
            BEGIN
                IF NEW.id <> OLD.id OR NEW.seq <= OLD.seq OR NEW.time < OLD.time
                   OR NOT EXISTS (SELECT 1 FROM profilevault.audit_log a WHERE a.seq = NEW.seq AND a.hash = NEW.hash) THEN
                    RAISE EXCEPTION 'the audit head only moves forward, onto an entry of the log';
                END IF;
                RETURN NEW;
            END $$
            """,
            """
            CREATE TRIGGER audit_head_forward BEFORE UPDATE ON profilevault.audit_head
                FOR EACH ROW EXECUTE FUNCTION profilevault.audit_head_advances()
            """,
            """
            CREATE TRIGGER audit_head_kept BEFORE DELETE ON profilevault.audit_head
                FOR EACH ROW EXECUTE FUNCTION profilevault.refuse_audit_change()
            """,
            """
            CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON profilevault.audit_head
                FOR EACH STATEMENT EXECUTE FUNCTION profilevault.refuse_audit_change()
            """,
        ]),
        PostgresMigration(version: 2, name: "dp-budget-ledger", statements: [
            // Spent epsilon in units of 2^-20 and delta in units of 10^-15, as the SQLite
            // ledger keeps them: integer sums are exact, so a budget that fits ten charges fits
            // exactly ten. Each row records the period length it was charged under.
            """
            CREATE TABLE profilevault.dp_budget(
                purpose text NOT NULL, period_start bigint NOT NULL, period_seconds bigint NOT NULL CHECK (period_seconds >= 1),
                spent_units bigint NOT NULL DEFAULT 0 CHECK (spent_units >= 0),
                delta_spent_units bigint NOT NULL DEFAULT 0 CHECK (delta_spent_units >= 0),
                PRIMARY KEY (purpose, period_start, period_seconds))
            """,
            // The ledger only grows: what was spent cannot be given back by an UPDATE, and rows
            // cannot be deleted (REVOKE for the service role; this trigger for anyone).
            """
            CREATE FUNCTION profilevault.dp_budget_only_grows() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
            BEGIN
                IF TG_OP <> 'UPDATE' OR NEW.purpose <> OLD.purpose OR NEW.period_start <> OLD.period_start
                   OR NEW.period_seconds <> OLD.period_seconds
                   OR NEW.spent_units < OLD.spent_units OR NEW.delta_spent_units < OLD.delta_spent_units THEN
                    RAISE EXCEPTION 'the budget ledger only grows';
                END IF;
                RETURN NEW;
            END $$
            """,
            """
            CREATE TRIGGER dp_budget_grows BEFORE UPDATE OR DELETE ON profilevault.dp_budget
                FOR EACH ROW EXECUTE FUNCTION profilevault.dp_budget_only_grows()
            """,
            """
            CREATE TRIGGER dp_budget_no_truncate BEFORE TRUNCATE ON profilevault.dp_budget
                FOR EACH STATEMENT EXECUTE FUNCTION profilevault.refuse_audit_change()
            """,
        ]),
        PostgresMigration(version: 3, name: "subjects-pii-events", statements: [
            // The keyring's versions as the SQLite store keeps them: a key check per version, so a
            // node with another keyring is refused before it writes (``PostgresProfiles``).
            """
            CREATE TABLE profilevault.key_versions(
                version bigint PRIMARY KEY CHECK (version BETWEEN 0 AND 4294967295), key_check bytea NOT NULL,
                added_at bigint NOT NULL, retired boolean NOT NULL DEFAULT false)
            """,
            // PII field name -> id: the `pii` table's columns are c<id> and m<id> (PIIColumns).
            "CREATE TABLE profilevault.pii_fields(id integer PRIMARY KEY CHECK (id >= 0), name text NOT NULL UNIQUE)",
            // A subject: its keyed pseudonym (never the customer ID) and its data key, wrapped by
            // the keyring's KEK. Deleting the row is the crypto-shredding of the subject.
            """
            CREATE TABLE profilevault.subjects(
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                pseudonym bytea NOT NULL UNIQUE CHECK (length(pseudonym) = 32),
                kek_version bigint NOT NULL CHECK (kek_version BETWEEN 0 AND 4294967295),
                wrapped_dek bytea NOT NULL,
                created_at bigint NOT NULL, updated_at bigint NOT NULL, last_activity bigint NOT NULL)
            """,
            // Events, deduplicated as SQLite's `events_identity` (subject, kind, time, item,
            // value): the item through its SHA-256 (`item_hash`, written by the engine), since an
            // item may be 64 KiB and a btree entry holds at most about 2.7 KiB. The foreign key
            // refuses an event for a subject erased meanwhile (no orphan rows after an erasure).
            """
            CREATE TABLE profilevault.events(
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                subject_id bigint NOT NULL REFERENCES profilevault.subjects(id),
                kind text NOT NULL, item text NOT NULL, item_hash bytea NOT NULL CHECK (length(item_hash) = 32),
                value double precision NOT NULL, time bigint NOT NULL)
            """,
            "CREATE UNIQUE INDEX events_identity ON profilevault.events(subject_id, kind, time, item_hash, value)",
            "CREATE INDEX events_kind_time ON profilevault.events(kind, time)",
            // Erased subjects' pseudonyms: a stale import cannot bring them back.
            "CREATE TABLE profilevault.suppressed(pseudonym bytea PRIMARY KEY, erased_at bigint NOT NULL, reason text NOT NULL)",
            // The schema-dependent tables (`pii`: a ciphertext column per PII field and a MAC column
            // per lookup field; `attributes`: a typed column per attribute) are created from the
            // schema by ``PostgresProfiles/create(owner:schema:keyring:options:)``, as the SQLite
            // store creates its `attributes` table when the store is created.
        ]),
        PostgresMigration(version: 4, name: "consent-and-policy-ledgers", statements: [
            // The consent ledger (append-only: every grant and revocation with its actor, source
            // and the policy version in force) and the state it leads to, as on SQLite
            // (Privacy.swift). Erasure deletes a subject's rows of both with the subject.
            """
            CREATE TABLE profilevault.consent(
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                subject_id bigint NOT NULL REFERENCES profilevault.subjects(id),
                purpose text NOT NULL, granted boolean NOT NULL, time bigint NOT NULL, actor text NOT NULL,
                source text, policy_version text NOT NULL)
            """,
            "CREATE INDEX consent_subject ON profilevault.consent(subject_id, purpose, id)",
            """
            CREATE FUNCTION profilevault.consent_append_only() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
            BEGIN
                RAISE EXCEPTION 'the consent ledger is append-only';
            END $$
            """,
            """
            CREATE TRIGGER consent_no_update BEFORE UPDATE ON profilevault.consent
                FOR EACH ROW EXECUTE FUNCTION profilevault.consent_append_only()
            """,
            """
            CREATE TABLE profilevault.consent_state(
                subject_id bigint NOT NULL REFERENCES profilevault.subjects(id),
                purpose text NOT NULL, granted boolean NOT NULL, since bigint NOT NULL,
                PRIMARY KEY (purpose, subject_id))
            """,
            "CREATE INDEX consent_state_subject ON profilevault.consent_state(subject_id)",
            // The policy ledger: every policy put in force, append-only for everyone (REVOKE for
            // the service role; these triggers for the owner too).
            """
            CREATE TABLE profilevault.policy_history(
                seq bigint PRIMARY KEY CHECK (seq >= 1), version text NOT NULL, sha256 text NOT NULL, schema_sha256 text NOT NULL,
                applied_at bigint NOT NULL, actor text NOT NULL, role text NOT NULL, summary text NOT NULL, changes text NOT NULL)
            """,
            """
            CREATE FUNCTION profilevault.policy_history_append_only() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
            BEGIN
                RAISE EXCEPTION 'the policy history is append-only';
            END $$
            """,
            """
            CREATE TRIGGER policy_history_no_change BEFORE UPDATE OR DELETE ON profilevault.policy_history
                FOR EACH ROW EXECUTE FUNCTION profilevault.policy_history_append_only()
            """,
            """
            CREATE TRIGGER policy_history_no_truncate BEFORE TRUNCATE ON profilevault.policy_history
                FOR EACH STATEMENT EXECUTE FUNCTION profilevault.policy_history_append_only()
            """,
        ]),
        PostgresMigration(version: 5, name: "key-custody", statements: [
            // A node records the versions a rotated keyring adds (`keys rotate`, then adopt) and
            // marks a version retired: the service role gets INSERT and UPDATE of `retired`
            // only (initialize). This trigger is the wall for everyone, the owner too: a row's
            // version, key check and time never change, a retired version is never un-retired,
            // and no row is deleted (a version's key check is what refuses a wrong keyring).
            """
            CREATE FUNCTION profilevault.key_versions_guard() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
            BEGIN
                IF TG_OP <> 'UPDATE' OR NEW.version <> OLD.version OR NEW.key_check <> OLD.key_check
                   OR NEW.added_at <> OLD.added_at OR (OLD.retired AND NOT NEW.retired) THEN
                    RAISE EXCEPTION 'a key version is only ever added or retired';
                END IF;
                RETURN NEW;
            END $$
            """,
            """
            CREATE TRIGGER key_versions_only_retire BEFORE UPDATE OR DELETE ON profilevault.key_versions
                FOR EACH ROW EXECUTE FUNCTION profilevault.key_versions_guard()
            """,
            """
            CREATE TRIGGER key_versions_no_truncate BEFORE TRUNCATE ON profilevault.key_versions
                FOR EACH STATEMENT EXECUTE FUNCTION profilevault.refuse_audit_change()
            """,
        ]),
        PostgresMigration(version: 6, name: "bulk-ingest", statements: [
            // A subject's `pii` and `attributes` rows are written in the transaction that writes
            // its `subjects` row and deleted with it by erasure (one transaction, under the
            // exclusive subjects lock), so their foreign keys only re-checked what the engine
            // already guarantees, at a per-row trigger that cost about half of those inserts'
            // server time (docs/benchmarks.md). Stores created at version 6 have none
            // (`tableStatements`); this drops those of older stores.
            "ALTER TABLE IF EXISTS profilevault.pii DROP CONSTRAINT IF EXISTS pii_subject_id_fkey",
            "ALTER TABLE IF EXISTS profilevault.attributes DROP CONSTRAINT IF EXISTS attributes_subject_id_fkey",
        ]),
        PostgresMigration(version: 7, name: "restriction-objection", statements: [
            // Restriction of processing (GDPR Art. 18): one row per restricted subject, deleted
            // with the subject by erasure. Objections (Art. 21) are consent-state rows with
            // granted false; the partial index answers "does this purpose have any" (the probe
            // every aggregate makes before it adds an anti-join), as on SQLite (Rights.swift).
            """
            CREATE TABLE profilevault.restriction(
                subject_id bigint PRIMARY KEY REFERENCES profilevault.subjects(id),
                since bigint NOT NULL)
            """,
            "CREATE INDEX consent_state_objection ON profilevault.consent_state(purpose) WHERE NOT granted",
        ]),
        PostgresMigration(version: 8, name: "request-register", statements: [
            // The request register, as on SQLite (RequestRegister.swift): metadata in the clear,
            // the customer ID, note and reasons sealed (AES-256-GCM under the register key);
            // erasure sets a subject's sealed columns NULL. Rows are never deleted.
            """
            CREATE TABLE profilevault.requests(
                id text PRIMARY KEY CHECK (id ~ '^req_[0-9a-f]{16}$'),
                type text NOT NULL CHECK (type IN ('access', 'erasure', 'rectification', 'restriction', 'objection', 'portability')),
                pseudonym bytea NOT NULL CHECK (length(pseudonym) = 32),
                customer_id_sealed bytea, received bigint NOT NULL, due bigint NOT NULL, extended_due bigint,
                channel text CHECK (channel IN ('web', 'email', 'letter', 'phone')), note_sealed bytea,
                status text NOT NULL CHECK (status IN ('open', 'done', 'denied')), outcome text,
                extend_reason_sealed bytea, deny_reason_sealed bytea,
                opened_at bigint NOT NULL, opened_by text NOT NULL, closed_at bigint, closed_by text)
            """,
            "CREATE INDEX requests_pseudonym ON profilevault.requests(pseudonym)",
            "CREATE INDEX requests_status ON profilevault.requests(status, due)",
            // The suppression list names the erasure's receipt (NULL for erasures before this).
            "ALTER TABLE profilevault.suppressed ADD COLUMN receipt_seq bigint",
            "ALTER TABLE profilevault.suppressed ADD COLUMN receipt text",
        ]),
        PostgresMigration(version: 9, name: "ingest-sources", statements: [
            // The ingest runs (the source of a subject's data, GDPR Art. 15(1)(g)): when, the
            // input's name as given, who, and the counts; no value of any record.
            """
            CREATE TABLE profilevault.ingest_batches(
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, kind text NOT NULL, time bigint NOT NULL,
                source text NOT NULL, actor text NOT NULL,
                inserted bigint NOT NULL DEFAULT 0, updated bigint NOT NULL DEFAULT 0,
                unchanged bigint NOT NULL DEFAULT 0, rejected bigint NOT NULL DEFAULT 0)
            """,
            // Per subject: the run that created it, the last run that changed it, and the keyed
            // digest of its last ingested record (an unchanged re-ingest writes nothing).
            """
            ALTER TABLE profilevault.subjects ADD COLUMN created_batch bigint, ADD COLUMN updated_batch bigint,
                ADD COLUMN record_digest bytea
            """,
        ]),
        // (Version 10 is left to the backup work of issue 20.)
        PostgresMigration(version: 11, name: "subject-rows-go-with-their-subject", statements: [
            // Migration 6 took the foreign keys off `pii` and `attributes` (the per-row check
            // cost half of ingest's inserts). The engine deletes those rows before their subject,
            // in one transaction; a DBA's own `DELETE FROM subjects` or `TRUNCATE ... CASCADE`
            // would instead leave them behind, and the DP scans of `attributes` would count
            // them. This statement-level check refuses such a statement once per statement (a
            // primary-key probe per deleted subject), never per inserted row.
            """
            CREATE FUNCTION profilevault.subject_rows_guard() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
            BEGIN
                IF TG_OP = 'TRUNCATE' THEN
                    IF EXISTS (SELECT 1 FROM profilevault.pii) OR EXISTS (SELECT 1 FROM profilevault.attributes) THEN
                        RAISE EXCEPTION 'profilevault: subjects truncated while pii or attributes rows remain: truncate them in the same statement'
                            USING ERRCODE = 'foreign_key_violation';
                    END IF;
                ELSIF EXISTS (SELECT 1 FROM gone g
                              WHERE EXISTS (SELECT 1 FROM profilevault.pii p WHERE p.subject_id = g.id)
                                 OR EXISTS (SELECT 1 FROM profilevault.attributes a WHERE a.subject_id = g.id)) THEN
                    RAISE EXCEPTION 'profilevault: a subject was deleted while its pii or attributes rows remain: delete them first (profilectl erase does)'
                        USING ERRCODE = 'foreign_key_violation';
                END IF;
                RETURN NULL;
            END $$
            """,
            """
            CREATE TRIGGER subjects_leave_no_rows AFTER DELETE ON profilevault.subjects
                REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION profilevault.subject_rows_guard()
            """,
            """
            CREATE TRIGGER subjects_truncate_leaves_no_rows AFTER TRUNCATE ON profilevault.subjects
                FOR EACH STATEMENT EXECUTE FUNCTION profilevault.subject_rows_guard()
            """,
        ]),
        // Archive anchors (`audit archive`): PostgresArchive.swift.
        auditArchiveMigration,
        // The DP release cache (`query` answered again at no cost): PostgresReleaseCache.swift.
        releaseCacheMigration,
        // The population epoch the cached releases are served at: PostgresReleaseCache.swift.
        populationEpochMigration,
        PostgresMigration(version: 16, name: "audit-head-checked-after-statement", statements: [
            // The head's trigger (migration 1) runs AFTER the update, at the end of the
            // statement: an append that inserts its entries and moves the head in one statement
            // (data-modifying CTEs, which share one snapshot) is checked once its entries are
            // in, which a BEFORE trigger could not see. The checks, and the error that aborts
            // the statement, are the same.
            "DROP TRIGGER audit_head_forward ON profilevault.audit_head",
            """
            CREATE TRIGGER audit_head_forward AFTER UPDATE ON profilevault.audit_head
                FOR EACH ROW EXECUTE FUNCTION profilevault.audit_head_advances()
            """,
        ]),
    ]

    public static var latestSchemaVersion: Int32 { migrations.last?.version ?? 0 }

    /// What ``initialize(_:)`` sets up.
    public struct InitOptions: Sendable {
        /// The role the service nodes run as (they log in as members of it: `GRANT ROLE TO
        /// login`). Created NOLOGIN when missing.
        public var serviceRole: String
        public var schemaVersion: String?
        public var policyVersion: String?
        public init(serviceRole: String = "profilevault_service", schemaVersion: String? = nil, policyVersion: String? = nil) {
            self.serviceRole = serviceRole
            self.schemaVersion = schemaVersion
            self.policyVersion = policyVersion
        }
    }

    /// Creates or migrates the schema and grants the service role exactly what a node needs.
    /// Run as the owner role (the one that owns the tables; never the service role). Safe to
    /// run again and from two processes at once: each migration runs once, in one transaction,
    /// under an advisory lock; the grants are set again to the same. The service role is
    /// recorded; another one on a later run is refused (``requireOneServiceRole(_:_:)``).
    ///
    /// The service role gets: USAGE on the schema; SELECT on `meta` and `schema_migrations`;
    /// SELECT and INSERT on `audit_log` and `audit_checkpoints`; SELECT and UPDATE on
    /// `audit_head` (UPDATE is what `SELECT ... FOR UPDATE` needs); SELECT on `audit_archive`
    /// (anchors are the owner's to record: `audit archive`); SELECT, INSERT and UPDATE
    /// on `dp_budget`; SELECT on `pii_fields`; SELECT, INSERT and UPDATE of the `retired`
    /// column on `key_versions` (migration 5's trigger refuses any other change); SELECT, INSERT
    /// and DELETE on `subjects`, with UPDATE of its changing columns only (key, times, digest);
    /// SELECT, INSERT, UPDATE and DELETE on `suppressed`, `pii` and `attributes`; SELECT, INSERT and DELETE on
    /// `events` (DELETE only where erasure needs it); SELECT, INSERT and DELETE on `consent`
    /// (append-only; erasure deletes); SELECT, INSERT, UPDATE and DELETE on `consent_state`;
    /// SELECT and INSERT on `policy_history`; SELECT, INSERT and DELETE on `restriction`;
    /// SELECT, INSERT and UPDATE on `requests` (never
    /// DELETE: erasure clears a request's sealed columns); SELECT, INSERT and UPDATE on
    /// `ingest_batches` (and USAGE on its id sequence); SELECT, INSERT, UPDATE and DELETE on
    /// `release_cache` (sealed releases: stored, replaced, dropped when their period ends or the
    /// population changes); SELECT and UPDATE on `population_epoch` (incremented by every change
    /// of the population; never INSERT or DELETE). Never UPDATE, DELETE or TRUNCATE on the
    /// audit tables, nor TRUNCATE anywhere. PUBLIC gets nothing.
    public func initialize(_ options: InitOptions = InitOptions()) async throws {
        let role = options.serviceRole
        guard Self.isPlainRoleName(role) else {
            throw PostgresStoreError(.configuration, "the service role name must be 1-63 lower-case letters, digits or _ (not pg_...)")
        }
        guard role != location.user else {
            throw PostgresStoreError(.configuration, "the service role must not be the role that owns the schema (\(location.user)): run init as the owner and the nodes as the service role")
        }
        try await transaction("creating the schema") { conn in
            try await exec(conn, "SELECT pg_advisory_xact_lock(\(Self.lockNamespaceMigrations), 0)")
            try await exec(conn, "CREATE SCHEMA IF NOT EXISTS profilevault")
            try await refuseForeignObjects(conn)
            try await exec(conn, "REVOKE ALL ON SCHEMA profilevault FROM PUBLIC")
            try await exec(conn, """
                CREATE TABLE IF NOT EXISTS profilevault.schema_migrations(
                    version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())
                """)
        }
        for m in Self.migrations {
            try await transaction("migration \(m.version) (\(m.name))") { conn in
                try await exec(conn, "SELECT pg_advisory_xact_lock(\(Self.lockNamespaceMigrations), 0)")
                let done = try await rows(conn, "SELECT 1 FROM profilevault.schema_migrations WHERE version = \(m.version)")
                guard done.isEmpty else { return }
                for s in m.statements { try await exec(conn, s) }
                try await exec(conn, "INSERT INTO profilevault.schema_migrations(version, name) VALUES (\(m.version), \(m.name))")
            }
        }
        let storeID = AuditLog.hex(SecureRandom.bytes(16))
        try await transaction("recording the store's metadata and granting the service role") { conn in
            try await exec(conn, "SELECT pg_advisory_xact_lock(\(Self.lockNamespaceMigrations), 0)")
            var meta: [(String, String)] = [("store_id", storeID), ("store_format", "1")]
            if let v = options.schemaVersion { meta.append(("schema_version", v)) }
            if let v = options.policyVersion { meta.append(("policy_version", v)) }
            for (k, v) in meta {
                try await exec(conn, "INSERT INTO profilevault.meta(key, value) VALUES (\(k), \(v)) ON CONFLICT (key) DO NOTHING")
            }
            // Budget windows count from the store's creation, on the server's clock (one clock
            // for every node).
            try await exec(conn, """
                INSERT INTO profilevault.meta(key, value)
                VALUES ('created_at', floor(extract(epoch FROM statement_timestamp()))::bigint::text) ON CONFLICT (key) DO NOTHING
                """)
            let existing = try await rows(conn, "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = \(role)")
            if let row = existing.first {
                let (superuser, bypass) = try row.decode((Bool, Bool).self)
                if superuser || bypass {
                    throw PostgresStoreError(.configuration, "the service role \(role) is a superuser or bypasses row security: no grant can restrain it; use a plain role")
                }
            }
            try await requireOneServiceRole(conn, role)
            if existing.isEmpty {
                try await exec(conn, PostgresQuery(unsafeSQL: "CREATE ROLE \(Self.quoted(role)) NOLOGIN"))
            }
            let r = Self.quoted(role)
            for sql in [
                "REVOKE ALL ON ALL TABLES IN SCHEMA profilevault FROM PUBLIC",
                "REVOKE ALL ON ALL FUNCTIONS IN SCHEMA profilevault FROM PUBLIC",
                "REVOKE ALL ON ALL TABLES IN SCHEMA profilevault FROM \(r)",
                "GRANT USAGE ON SCHEMA profilevault TO \(r)",
                // Ingest takes row ids from the subjects' and events' identity sequences
                // (nextval: USAGE) to number a batch in file order.
                "REVOKE ALL ON ALL SEQUENCES IN SCHEMA profilevault FROM PUBLIC",
                "GRANT USAGE ON SEQUENCE profilevault.subjects_id_seq, profilevault.events_id_seq TO \(r)",
                "GRANT SELECT ON profilevault.meta, profilevault.schema_migrations TO \(r)",
                "GRANT SELECT, INSERT ON profilevault.audit_log, profilevault.audit_checkpoints TO \(r)",
                "GRANT SELECT, UPDATE ON profilevault.audit_head TO \(r)",
                // Archive anchors are recorded by the owner (`audit archive`); a node reads them
                // to verify and export the live chain.
                "GRANT SELECT ON profilevault.audit_archive TO \(r)",
                "GRANT SELECT, INSERT, UPDATE ON profilevault.dp_budget TO \(r)",
                // Ingest inserts and updates subjects (upsert); erasure deletes them. The PII
                // field table is written by the owner only; key versions are added (adopting
                // a rotated keyring) and retired by nodes, and nothing else (migration 5's
                // trigger: never un-retired, never a key check changed).
                "GRANT SELECT ON profilevault.key_versions, profilevault.pii_fields TO \(r)",
                "GRANT INSERT ON profilevault.key_versions TO \(r)",
                "GRANT UPDATE (retired) ON profilevault.key_versions TO \(r)",
                // A subject's identity (row id, pseudonym, creation time and run) is written once;
                // what changes is its wrapped key (re-ingest, rotation), its times and its last
                // run's digest. Per-column UPDATE keeps a node from re-pointing a row at
                // another pseudonym (every table keys its rows by the subject's row id).
                "GRANT SELECT, INSERT, DELETE ON profilevault.subjects TO \(r)",
                "GRANT UPDATE (kek_version, wrapped_dek, updated_at, last_activity, record_digest, updated_batch) ON profilevault.subjects TO \(r)",
                // Events are never updated: inserted (deduplicated), deleted by erasure and retention.
                "GRANT SELECT, INSERT, DELETE ON profilevault.events TO \(r)",
                // Erasure adds (or refreshes) a pseudonym; --allow-reingest removes one.
                "GRANT SELECT, INSERT, UPDATE, DELETE ON profilevault.suppressed TO \(r)",
                // Consent: the ledger is appended to (and deleted by erasure), the state upserted.
                "GRANT SELECT, INSERT, DELETE ON profilevault.consent TO \(r)",
                "GRANT SELECT, INSERT, UPDATE, DELETE ON profilevault.consent_state TO \(r)",
                // The policy ledger only grows.
                "GRANT SELECT, INSERT ON profilevault.policy_history TO \(r)",
                // Restriction (Art. 18): a row added by restrict, deleted by unrestrict and erasure.
                "GRANT SELECT, INSERT, DELETE ON profilevault.restriction TO \(r)",
                // The request register: opened (INSERT), extended, closed and, by erasure, its
                // sealed columns cleared (UPDATE); never deleted.
                "GRANT SELECT, INSERT, UPDATE ON profilevault.requests TO \(r)",
                // Ingest runs: a run inserts its row, then adds each transaction's counts.
                "GRANT SELECT, INSERT, UPDATE ON profilevault.ingest_batches TO \(r)",
                "GRANT USAGE ON SEQUENCE profilevault.ingest_batches_id_seq TO \(r)",
                // The release cache: looked up, stored or replaced (upsert), dropped when a
                // period ends or the population changes. Its rows are sealed (ReleaseSealing).
                "GRANT SELECT, INSERT, UPDATE, DELETE ON profilevault.release_cache TO \(r)",
                // The population epoch: read by the cache, incremented by every change of the
                // population (its one row is the migration's; the role cannot add or remove it).
                "GRANT SELECT, UPDATE ON profilevault.population_epoch TO \(r)",
            ] {
                try await exec(conn, PostgresQuery(unsafeSQL: sql))
            }
            // The schema's tables, once created (PostgresProfiles): the REVOKE above took
            // their grants too.
            try await PostgresProfiles.grantProfileTables(conn, role: r, engine: self)
            // After the grants: what the role holds through any membership, too.
            try await refuseUnrestrainable(conn, role)
        }
    }

    /// A store has one service role, recorded in `meta` (`service_role`) by the first init:
    /// init again (to migrate, or from a second host) with another name is refused
    /// (configuration, naming the store's role) before anything is created or granted, where
    /// it used to create and grant a second role. A store initialised before the role was
    /// recorded is known by the roles granted INSERT on `audit_log` directly (what only a
    /// service role gets): `role` is recorded when it is the only one (or there is none); when
    /// there are others (an older init with another name made a second one, or a DBA granted
    /// it), init is refused naming them all, so the operator revokes the extra ones first; none
    /// is picked for them.
    func requireOneServiceRole(_ conn: PostgresConnection, _ role: String) async throws {
        if let recorded = try await rows(conn, "SELECT value FROM profilevault.meta WHERE key = 'service_role'").first?.decode(String.self) {
            guard recorded == role else {
                throw PostgresStoreError(.configuration, "\(location.description) already has the service role \(recorded), not \(role): a store has one service role; run init with --service-role \(recorded)")
            }
            return
        }
        let granted = try await rows(conn, """
            SELECT DISTINCT r.rolname FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a JOIN pg_roles r ON r.oid = a.grantee
            WHERE c.oid = 'profilevault.audit_log'::regclass AND a.privilege_type = 'INSERT' AND a.grantee <> c.relowner
            ORDER BY r.rolname
            """).map { try $0.decode(String.self) }
        let others = granted.filter { $0 != role }
        guard others.isEmpty else {
            let named = granted.joined(separator: ", ")
            throw PostgresStoreError(.configuration, granted.contains(role)
                ? "\(location.description): INSERT on the audit log is granted to \(named), not to \(role) alone: a store has one service role; revoke the others' grants (REVOKE ALL ON ALL TABLES IN SCHEMA profilevault FROM ...) and run init again"
                : "\(location.description) already has the service role \(named), not \(role): a store has one service role; run init with --service-role \(granted[0])\(granted.count > 1 ? " after revoking the others' grants" : "")")
        }
        try await exec(conn, "INSERT INTO profilevault.meta(key, value) VALUES ('service_role', \(role)) ON CONFLICT (key) DO NOTHING")
    }

    /// Refuses (configuration) a service role that the grants cannot restrain because of what
    /// it is a member of: a role that owns the schema or one of its tables (an owner may
    /// `ALTER TABLE ... DISABLE TRIGGER` and holds every privilege), or a superuser,
    /// row-security-bypassing or CREATEROLE role (on PostgreSQL 15 CREATEROLE may grant itself
    /// the owner), whether it is such a role itself or may `SET ROLE` to one; or a role that
    /// holds, directly or through a membership (such as `pg_write_all_data`), a privilege the
    /// service role must never have: UPDATE, DELETE, TRUNCATE, TRIGGER or REFERENCES on the
    /// audit tables, INSERT, DELETE, TRUNCATE, TRIGGER or REFERENCES on the head and the
    /// ledger, any write on `meta` and `schema_migrations`, UPDATE of anything but `retired`,
    /// DELETE or TRUNCATE on `key_versions`. REVOKE removes only what was
    /// granted to the role itself, so this is checked, not assumed.
    func refuseUnrestrainable(_ conn: PostgresConnection, _ role: String, as what: String = "the service role") async throws {
        guard let row = try await rows(conn, """
            SELECT
              EXISTS (SELECT 1 FROM pg_roles s
                      WHERE (s.rolsuper OR s.rolbypassrls OR s.rolcreaterole) AND pg_has_role(r.oid, s.oid, 'MEMBER')),
              EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = 'profilevault' AND pg_has_role(r.oid, n.nspowner, 'MEMBER'))
                OR EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                           WHERE n.nspname = 'profilevault' AND pg_has_role(r.oid, c.relowner, 'MEMBER')),
              COALESCE(has_table_privilege(r.oid, to_regclass('profilevault.audit_log'), 'UPDATE, DELETE, TRUNCATE, TRIGGER, REFERENCES'), false)
                OR COALESCE(has_table_privilege(r.oid, to_regclass('profilevault.audit_checkpoints'), 'UPDATE, DELETE, TRUNCATE, TRIGGER, REFERENCES'), false)
                OR COALESCE(has_table_privilege(r.oid, to_regclass('profilevault.audit_head'), 'INSERT, DELETE, TRUNCATE, TRIGGER, REFERENCES'), false)
                OR COALESCE(has_table_privilege(r.oid, to_regclass('profilevault.audit_archive'), 'INSERT, UPDATE, DELETE, TRUNCATE, TRIGGER, REFERENCES'), false)
                OR COALESCE(has_table_privilege(r.oid, to_regclass('profilevault.dp_budget'), 'DELETE, TRUNCATE, TRIGGER, REFERENCES'), false)
                OR COALESCE(has_table_privilege(r.oid, to_regclass('profilevault.meta'), 'INSERT, UPDATE, DELETE, TRUNCATE, TRIGGER, REFERENCES'), false)
                OR COALESCE(has_table_privilege(r.oid, to_regclass('profilevault.schema_migrations'), 'INSERT, UPDATE, DELETE, TRUNCATE, TRIGGER, REFERENCES'), false)
                OR COALESCE(has_table_privilege(r.oid, to_regclass('profilevault.policy_history'), 'UPDATE, DELETE, TRUNCATE, TRIGGER, REFERENCES'), false)
                OR COALESCE(has_table_privilege(r.oid, to_regclass('profilevault.consent'), 'UPDATE, TRUNCATE, TRIGGER, REFERENCES'), false)
                OR COALESCE(has_table_privilege(r.oid, to_regclass('profilevault.key_versions'), 'UPDATE, DELETE, TRUNCATE, TRIGGER, REFERENCES'), false)
                OR COALESCE(has_column_privilege(r.oid, to_regclass('profilevault.key_versions'), 'key_check', 'UPDATE'), false)
            FROM pg_roles r WHERE r.rolname = \(role)
            """).first else { return }
        let (powerful, owner, privileged) = try row.decode((Bool, Bool, Bool).self)
        if powerful {
            throw PostgresStoreError(.configuration, "\(what) \(role) is, or may act as, a superuser, a role that bypasses row security or a CREATEROLE role: no grant can restrain it; use a plain role")
        }
        if owner {
            throw PostgresStoreError(.configuration, "\(what) \(role) is a member of the role that owns the schema (\(location.user) or another): an owner can disable the triggers; use a plain role")
        }
        if privileged {
            throw PostgresStoreError(.configuration, "\(what) \(role) holds, through a role it is a member of (such as pg_write_all_data), UPDATE, DELETE or TRUNCATE on the audit tables or another privilege a node must not have: revoke that membership")
        }
        // PostgreSQL 15 lets a superuser GRANT SET ON PARAMETER: `session_replication_role =
        // replica` switches every ordinary trigger off for the session, so the ledger (which
        // the role may UPDATE) would lose its only wall. (Before 15 only a superuser may set it.)
        guard let version = try await rows(conn, "SELECT current_setting('server_version_num')::int").first,
              try version.decode(Int32.self) >= 150_000 else { return }
        if let p = try await rows(conn, """
            SELECT has_parameter_privilege(r.oid, 'session_replication_role', 'SET') FROM pg_roles r WHERE r.rolname = \(role)
            """).first, try p.decode(Bool.self) {
            throw PostgresStoreError(.configuration, "\(what) \(role) may SET session_replication_role, which switches the triggers off: REVOKE SET ON PARAMETER session_replication_role from it")
        }
    }

    /// Refuses (configuration) a schema `profilevault` that is not this role's own: one that
    /// another role created first (its owner may drop, rename or replace any table in it, and
    /// a `schema_migrations` it wrote would make init skip the migrations, so the nodes would
    /// use tables without triggers), or that holds a table, view, sequence or function another
    /// role owns. Run before anything is created or granted in it.
    func refuseForeignObjects(_ conn: PostgresConnection) async throws {
        guard let row = try await rows(conn, """
            SELECT pg_get_userbyid(n.nspowner) = current_user,
                   EXISTS (SELECT 1 FROM pg_class c WHERE c.relnamespace = n.oid AND c.relowner <> n.nspowner)
                     OR EXISTS (SELECT 1 FROM pg_proc p WHERE p.pronamespace = n.oid AND p.proowner <> n.nspowner)
                     OR EXISTS (SELECT 1 FROM pg_type t WHERE t.typnamespace = n.oid AND t.typowner <> n.nspowner)
            FROM pg_namespace n WHERE n.nspname = 'profilevault'
            """).first else {
            throw PostgresStoreError(.internalFailure, "the schema profilevault was not created")
        }
        let (ours, foreign) = try row.decode((Bool, Bool).self)
        guard ours else {
            throw PostgresStoreError(.configuration, "the schema profilevault exists and belongs to another role than \(location.user): its owner could replace the tables; drop it or run init as its owner")
        }
        guard !foreign else {
            throw PostgresStoreError(.configuration, "the schema profilevault holds an object another role owns: it was planted; drop it before init")
        }
    }

    /// `"name"`: only ever called on a name ``isPlainRoleName(_:)`` accepted.
    static func quoted(_ name: String) -> String { "\"" + name + "\"" }

    /// The schema versions applied, oldest first (empty: not initialised).
    public func appliedMigrations() async throws -> [(version: Int32, name: String)] {
        try await transaction("reading the schema version") { conn in
            let exists = try await rows(conn, "SELECT to_regclass('profilevault.schema_migrations') IS NOT NULL")
            guard let e = exists.first, try e.decode(Bool.self) else { return [(Int32, String)]() }
            var out: [(Int32, String)] = []
            for row in try await rows(conn, "SELECT version, name FROM profilevault.schema_migrations ORDER BY version") {
                out.append(try row.decode((Int32, String).self))
            }
            return out
        }.map { (version: $0.0, name: $0.1) }
    }

    /// Checks that the database holds this engine's schema at the version it knows: a node
    /// refuses to start against a database that is not initialised (run init) or that a newer
    /// version migrated (configuration errors).
    public func checkSchema() async throws {
        let applied = try await appliedMigrations()
        guard let newest = applied.last?.version else {
            throw PostgresStoreError(.configuration, "\(location.description): no ProfileVault schema here; run profilectl init --store with this location first")
        }
        if newest < Self.latestSchemaVersion {
            throw PostgresStoreError(.configuration, "\(location.description): the schema is at version \(newest) and this build needs \(Self.latestSchemaVersion); run profilectl init --store with this location (as the owner role) to migrate it")
        }
        if newest > Self.latestSchemaVersion {
            throw PostgresStoreError(.configuration, "\(location.description): the schema is at version \(newest), newer than this build knows (\(Self.latestSchemaVersion)); upgrade profilectl")
        }
    }

    /// The store's metadata (store id, created_at, schema and policy versions).
    public func meta() async throws -> [String: String] {
        try await transaction("reading the store's metadata") { conn in
            var out: [String: String] = [:]
            for row in try await rows(conn, "SELECT key, value FROM profilevault.meta") {
                let (k, v) = try row.decode((String, String).self)
                out[k] = v
            }
            return out
        }
    }
}
