import Foundation
import Synchronization
import PostgresNIO
import VaultAudit
import VaultCrypto
import VaultPolicy
public import VaultStore
import VaultValues

extension PostgresProfiles {
    // MARK: - Profiles

    /// Ingests profiles from `source` with the SQLite engine's semantics: the whole input is
    /// validated first (unless `skipInvalid`), so one bad record writes nothing; then records
    /// are written in transactions of `options.batchSize`, each with its audit entry (the
    /// cluster's one chain) committed in it. Upsert by customer ID: a record replaces the whole
    /// stored profile and wraps a new data key. Erased customers are refused unless
    /// `allowReingest`. Bulk writes: one `unnest` statement per column set and 4,096 records,
    /// every value a bound array; a transaction whose subjects are all new is written with
    /// binary `COPY`s instead (``copyNewProfiles(_:_:_:ids:now:batch:)``).
    public func ingestProfiles(_ source: RecordSource, options: IngestOptions = IngestOptions()) throws -> IngestReport {
        let started = Date()
        let path = source.name
        let schema = self.schema
        let columns = ProfileStore.profileColumns(schema), types = ProfileStore.profileTypes(schema)
        let aliases = ProfileStore.profileAliases(schema)
        let required: Set<String> = [schema.subjectIDField]
        guard options.batchSize >= 1 else { throw VaultError(.usage, "the batch size must be at least 1") }
        let suppressed = options.allowReingest ? [:] : try Self.wait("reading the suppression list") { try await self.suppressionList() }
        let keys = self.keys, piiFieldIDs = self.piiFieldIDs, piiColumns = self.piiColumns
        let sealer = try ProfileSealer(schema: schema, keys: keys, piiFieldIDs: piiFieldIDs, piiColumns: piiColumns)
        // A validator per thread: the suppression check's HMAC context is not shared.
        let makeValidator: @Sendable () throws -> (RawRecord) -> Result<ValidProfile, RecordIssue> = {
            let checker = suppressed.isEmpty ? nil : try ProfileSealer(schema: schema, keys: keys, piiFieldIDs: piiFieldIDs, piiColumns: piiColumns)
            return { raw in
                let r = ProfileStore.validateProfile(raw, file: path, schema: schema)
                if case .success(let p) = r, let checker, let erased = suppressed[checker.pseudonym(of: p.customerID)] {
                    return .failure(RecordIssue.make(file: path, line: p.line, field: schema.subjectIDField,
                        reason: "this customer was erased on \(DateParsing.iso8601(unixSeconds: erased / 1000)); a stale import cannot bring them back (--allow-reingest records them as a new subject)"))
                }
                return r
            }
        }
        let validate = try makeValidator()
        func reader() throws -> RecordReader {
            try RecordReader(source: source, format: options.format, delimiter: options.delimiter, columns: columns, required: required,
                             types: types, aliases: aliases)
        }
        // The whole input must be valid before anything commits (unless `skipInvalid`). Pass 1
        // reads it on a thread of its own while this thread already parses and seals the first
        // transaction; the writer starts it only once the gate has passed.
        let format = options.format, delimiter = options.delimiter
        let validation = ValidationPass(skip: options.skipInvalid, lowerPriority: false, openReader: {
            try RecordReader(source: source, format: format, delimiter: delimiter, columns: columns, required: required, types: types, aliases: aliases)
        }, makeValidator: makeValidator)
        let gate = validation.gate
        defer { validation.finish() }
        let rejects = try RejectsWriter(options, ownFiles: ownFiles)
        let input = try reader()
        // Pipeline: this thread parses, validates and seals transaction N+1 while a writer
        // thread has transaction N written (the database server does that work), so the node's
        // crypto and the server's inserts use both cores. This thread seals the next transaction
        // only once the writer has taken the one it handed over: at most two transactions'
        // records are in memory (the one being written and the one being sealed).
        struct Batch: Sendable {
            var profiles: PackedProfiles
            var rejected: Int, firstLine: Int, lastLine: Int
        }
        let piiWidth = piiColumns.valueColumns.count, attributeCount = schema.attributeFields.count
        let capacity = min(options.batchSize, 65_536)
        func newBatch() -> Batch {
            Batch(profiles: PackedProfiles(piiWidth: piiWidth, attributeCount: attributeCount, capacity: capacity), rejected: 0, firstLine: 0, lastLine: 0)
        }
        let channel = BoundedChannel<Batch>(capacity: 1)
        let counts = WriterCounts()
        let audit = options.audit, allowReingest = options.allowReingest
        let batchRecorder = IngestBatchRecorder(kind: "profiles", source: path, actor: audit?.actor)
        let writer = WorkerThread(name: "profilevault-ingest-writer") { [self] in
            while let work = channel.take() {
                do {
                    let (ins, upd, same) = try writeBatch(work.profiles, file: path, rejected: work.rejected, firstLine: work.firstLine,
                                                          lastLine: work.lastLine, audit: audit, allowReingest: allowReingest,
                                                          batch: batchRecorder, gate: gate)
                    counts.add(inserted: ins, updated: upd, unchanged: same)
                } catch {
                    channel.fail(Self.reported(error, gate: gate))
                    return
                }
            }
        }
        var report = IngestReport()
        var batch = newBatch()
        var inTransaction = 0, n = 0
        do {
            while let raw = try input.next() {
                if batch.firstLine == 0 { batch.firstLine = raw.line }
                batch.lastLine = raw.line
                switch validate(raw) {
                case .failure(let issue):
                    if !options.skipInvalid {
                        // Pass 1 has found this record too (or an earlier one): its error is the
                        // input's first. Were the gate open, the input changed since pass 1 read it.
                        try gate.wait()
                        throw issue.error()
                    }
                    report.rejected += 1
                    batch.rejected += 1
                    rejects?.write(issue)
                case .success(let p):
                    try batch.profiles.append(try sealer.seal(p))
                }
                n += 1
                inTransaction += 1
                if inTransaction == options.batchSize {
                    try channel.put(batch)
                    try channel.waitUntilTaken()
                    batch = newBatch()
                    inTransaction = 0
                    options.progress?(IngestProgress.make(phase: "ingesting", records: n, bytes: input.bytesRead, totalBytes: source.byteCount))
                }
            }
            if inTransaction > 0 { try channel.put(batch) }
        } catch {
            // A transaction waiting for the validation pass must not commit now: the gate
            // fails (the first result wins; a pass already passed keeps its result) and the
            // pass stops.
            gate.settle(.failure(error))
            gate.cancel()
            channel.close()
            writer.join()
            throw channel.consumerFailure ?? error
        }
        channel.close()
        writer.join()
        if let failure = channel.consumerFailure { throw failure }
        (report.inserted, report.updated) = counts.value
        report.unchanged = counts.unchangedCount
        options.progress?(IngestProgress.make(phase: "done", records: n, bytes: input.bytesRead, totalBytes: source.byteCount))
        try rejects?.finish()
        report.seconds = Date().timeIntervalSince(started)
        return report
    }

    /// One transaction of sealed profiles and its audit entry (appended last, so the head row
    /// is locked only while the transaction commits).
    ///
    /// The transaction holds the subjects lock shared (ingests on every node run side by side)
    /// and checks the suppression list again: an erasure holds that lock exclusively, so a
    /// customer erased on another node after this ingest read the list is refused here, not
    /// brought back.
    ///
    /// A record whose digest equals the stored one is `unchanged` (nothing of it is written, as
    /// on SQLite); the subject row names the ingest run that created it and the last one that
    /// changed it, and the run's row (inserted by its first transaction) gets each
    /// transaction's counts.
    ///
    /// `beforeAudit` runs on the transaction's connection after the rows are written and before
    /// the audit entry and the commit (the ingest waits there for its validation pass); what it
    /// throws rolls everything back.
    func writeProfiles(_ profiles: PackedProfiles, file: String, rejected: Int, firstLine: Int, lastLine: Int, audit: AuditContext?,
                       allowReingest: Bool, batch: IngestBatchRecorder? = nil,
                       beforeAudit: (@Sendable (PostgresConnection) async throws -> Void)? = nil) async throws -> (inserted: Int, updated: Int, unchanged: Int) {
        let now = Int64(Date().timeIntervalSince1970)
        let recorder = batch ?? IngestBatchRecorder(kind: "profiles", source: "", actor: audit?.actor, time: now)
        // Every batch locks its subjects in one global order (the pseudonym's bytes; a repeated
        // customer stays in file order, so the later record still wins): two nodes ingesting
        // the same customers then wait for each other instead of deadlocking.
        let order = profiles.lockOrder()
        let (ins, upd, same, batchID, copied) = try await engine.retryingDeadlocks { try await engine.transaction("ingesting profiles") { conn in
            try await engine.exec(conn, "SELECT pg_advisory_xact_lock_shared(\(Self.lockNamespaceSubjects), 0)")
            // The run's row: inserted by its first transaction that commits (the id is kept only
            // once it has: a transaction retried after a deadlock inserts it again).
            let batchID: Int64
            if let id = recorder.id {
                batchID = id
            } else {
                guard let id = try await engine.rows(conn, """
                    INSERT INTO profilevault.ingest_batches(kind, time, source, actor)
                    VALUES (\(recorder.kind), \(recorder.time), \(recorder.source), \(recorder.actor)) RETURNING id
                    """).first?.decode(Int64.self) else {
                    throw PostgresStoreError(.internalFailure, "the ingest batch insert returned no id")
                }
                batchID = id
            }
            if !allowReingest, profiles.count > 0 {
                let erased = try await engine.rows(conn, "SELECT pseudonym FROM profilevault.suppressed WHERE pseudonym = ANY(\((0..<profiles.count).map { profiles.pseudonymBuffer($0) })::bytea[])")
                if !erased.isEmpty {
                    let set = Set(try erased.map { try $0.decode(ByteBuffer.self).bytes })
                    let line = (0..<profiles.count).filter { set.contains(Array(profiles.pseudonym($0))) }.map { profiles.lines[$0] }.min() ?? firstLine
                    throw PostgresStoreError(.invalidInput, RecordIssue.make(file: file, line: line, field: schema.subjectIDField,
                        reason: "this customer was erased while the ingest ran; a stale import cannot bring them back (--allow-reingest records them as a new subject)").description)
                }
            }
            let fresh = try await engine.freshIDs(conn, table: "subjects", inLineOrder: order.map { profiles.lines[$0] })
            var ins = 0, upd = 0, same = 0, reingested = 0
            var start = 0
            // Every subject new (the bulk case): three binary COPYs, the rows the upserts
            // below would write. Otherwise (nothing of it written) the upserts.
            let copied = try await copyNewProfiles(conn, profiles, order, ids: fresh, now: now, batch: batchID)
            if copied {
                ins = profiles.count
                if allowReingest {
                    for s in stride(from: 0, to: order.count, by: Self.statementRows) {
                        let chunk = order[s..<min(s + Self.statementRows, order.count)].map { profiles.pseudonymBuffer($0) }
                        reingested += try await engine.rows(conn, "DELETE FROM profilevault.suppressed WHERE pseudonym = ANY(\(chunk)::bytea[]) RETURNING 1").count
                    }
                }
                start = order.count
            }
            while start < order.count {
                // One statement holds each pseudonym once (an upsert may not touch a row twice):
                // a customer repeated in the file (adjacent in lock order) goes to the next
                // statement, in file order. And a statement stays under `statementBytes` of bound
                // values (PostgreSQL's message limit is 1 GB; PII fields may be long).
                var end = start
                var bytes = 0
                while end < order.count, end - start < Self.statementRows,
                      end == start || bytes + profiles.boundBytes[order[end]] <= Self.statementBytes,
                      end == start || profiles.pseudonym(order[end]) != profiles.pseudonym(order[end - 1]) {
                    bytes += profiles.boundBytes[order[end]]
                    end += 1
                }
                let (i, u, n, r) = try await writeChunk(conn, profiles, order[start..<end], ids: Array(fresh[start..<end]), now: now,
                                                        allowReingest: allowReingest, batch: batchID)
                ins += i
                upd += u
                same += n
                reingested += r
                start = end
            }
            try await engine.exec(conn, """
                UPDATE profilevault.ingest_batches SET inserted = inserted + \(Int64(ins)), updated = updated + \(Int64(upd)),
                    unchanged = unchanged + \(Int64(same)), rejected = rejected + \(Int64(rejected)) WHERE id = \(batchID)
                """)
            try await beforeAudit?(conn)
            if let audit {
                try await engine.appendLocked(conn, [audit.record("ingest.profiles", .create, fields: schema.fields.map(\.name), counts: [
                    ("inserted", Int64(ins)), ("updated", Int64(upd)), ("unchanged", Int64(same)), ("rejected", Int64(rejected)),
                    ("first_line", Int64(firstLine)), ("last_line", Int64(lastLine)), ("reingested", Int64(reingested)),
                    ("batch", batchID),
                ])])
            }
            if ins + upd > 0 { try await engine.bumpPopulationEpoch(conn) }
            return (ins, upd, same, batchID, copied)
        } }
        if copied { bulkCopy.withLock { $0.transactions += 1 } }
        recorder.id = batchID
        return (ins, upd, same)
    }

    /// Writes one transaction of an ingest. Once the validation pass behind `gate` has passed,
    /// simply so. While it still runs, the transaction is written and then waits for the pass
    /// after its rows, before its audit entry (the head row is not held while waiting) and its
    /// commit; a bad record anywhere in the input rolls it back. Meanwhile it holds the subjects
    /// lock shared and its new rows' index entries: should another session wait for a lock it
    /// holds (an erasure asks for that lock exclusively, another node inserts one of the same
    /// customers), the transaction rolls back at once, waits for the pass outside any
    /// transaction and is written again, so nobody waits longer for it than for a transaction
    /// of its size.
    func writeBatch(_ profiles: PackedProfiles, file: String, rejected: Int, firstLine: Int, lastLine: Int, audit: AuditContext?,
                    allowReingest: Bool, batch: IngestBatchRecorder, gate: ValidationGate) throws -> (inserted: Int, updated: Int, unchanged: Int) {
        func write(_ beforeAudit: (@Sendable (PostgresConnection) async throws -> Void)?) throws -> (inserted: Int, updated: Int, unchanged: Int) {
            try Self.wait("ingesting profiles") {
                try await self.writeProfiles(profiles, file: file, rejected: rejected, firstLine: firstLine, lastLine: lastLine, audit: audit,
                                             allowReingest: allowReingest, batch: batch, beforeAudit: beforeAudit)
            }
        }
        if gate.isSettled {
            try gate.wait()   // throws the pass's failure
            return try write(nil)
        }
        let yielded = YieldFlag()
        do {
            return try write { conn in try await self.waitForPass(gate, conn, yielded: yielded) }
        } catch where yielded.isSet {
            try gate.wait()
            return try write(nil)
        }
    }

    /// Polls until the validation pass behind `gate` has ended (throws its failure), on the
    /// waiting transaction's own connection (idle in its transaction at most 250 ms at a time).
    /// Throws, with `yielded` set, as soon as another session waits for a lock this one holds.
    /// The poll reads the whole lock table (`pg_locks`; `pg_blocking_pids` only for waiters), so
    /// it backs off from every 50 ms to every 250 ms.
    func waitForPass(_ gate: ValidationGate, _ conn: PostgresConnection, yielded: YieldFlag) async throws {
        var pause = 50
        while !gate.isSettled {
            let blocking = try await engine.rows(conn, """
                SELECT EXISTS (SELECT 1 FROM pg_locks l WHERE NOT l.granted AND pg_backend_pid() = ANY(pg_blocking_pids(l.pid)))
                """).first?.decode(Bool.self) ?? false
            if blocking {
                yielded.set()
                throw PostgresStoreError(.internalFailure, "another session waits for this ingest's transaction; it is written again after validation")
            }
            try await Task.sleep(for: .milliseconds(pause))
            pause = min(pause * 2, 250)
        }
        try gate.wait()
    }

    /// The error an ingest's writer reports: the validation pass's when the input holds a bad
    /// record (a transaction waiting for the pass was rolled back because of it, or failed in a
    /// way a valid input might not have), else `error`. Waits for the pass to end.
    static func reported(_ error: any Error, gate: ValidationGate) -> any Error {
        do { try gate.wait() } catch let bad { return bad }
        return error
    }

    /// Upserts the profiles at `chunk` (indices into `profiles`, each pseudonym once).
    /// `ids`: the row id each record gets if it is new (``PostgresEngine/freshIDs``); a
    /// subject already stored keeps its own.
    func writeChunk(_ conn: PostgresConnection, _ profiles: PackedProfiles, _ chunk: ArraySlice<Int>, ids fresh: [Int64], now: Int64,
                    allowReingest: Bool, batch: Int64) async throws -> (inserted: Int, updated: Int, unchanged: Int, reingested: Int) {
        let pseudonyms = chunk.map { profiles.pseudonymBuffer($0) }
        let versions = chunk.map { Int64(profiles.kekVersions[$0]) }
        let wrapped = chunk.map { profiles.wrappedDEK($0) }
        let digests = chunk.map { profiles.digest($0) }
        let activity = chunk.map { profiles.lastActivities[$0] }, hasActivity = chunk.map { profiles.hasLastActivity[$0] }
        // xmax = 0: the row was inserted by this statement (not updated). A stored subject whose
        // record digest is the record's is left alone (the WHERE of DO UPDATE) and returns no row.
        let returned = try await engine.rows(conn, """
            INSERT INTO profilevault.subjects(id, pseudonym, kek_version, wrapped_dek, created_at, updated_at, last_activity,
                                              record_digest, created_batch, updated_batch)
            OVERRIDING SYSTEM VALUE
            SELECT i, p, k, w, \(now), \(now), CASE WHEN h THEN a ELSE \(now) END, d, \(batch), \(batch)
            FROM unnest(\(fresh)::bigint[], \(pseudonyms)::bytea[], \(versions)::bigint[], \(wrapped)::bytea[], \(digests)::bytea[],
                        \(activity)::bigint[], \(hasActivity)::boolean[]) AS t(i, p, k, w, d, a, h) ORDER BY p
            ON CONFLICT (pseudonym) DO UPDATE SET kek_version = EXCLUDED.kek_version, wrapped_dek = EXCLUDED.wrapped_dek,
                updated_at = EXCLUDED.updated_at, last_activity = greatest(profilevault.subjects.last_activity, EXCLUDED.last_activity),
                record_digest = EXCLUDED.record_digest, updated_batch = EXCLUDED.updated_batch
            WHERE profilevault.subjects.record_digest IS DISTINCT FROM EXCLUDED.record_digest
            RETURNING pseudonym, id, (xmax = 0)
            """)
        var ids: [ByteBuffer: Int64] = [:]
        ids.reserveCapacity(returned.count)
        var inserted: [ByteBuffer] = []
        for row in returned {
            let (p, id, isNew) = try row.decode((ByteBuffer, Int64, Bool).self)
            ids[p] = id
            if isNew { inserted.append(p) }
        }
        // The records written (inserted or changed), in the chunk's order; the others are unchanged.
        var subjectIDs: [Int64] = []
        var written: [Int] = []
        subjectIDs.reserveCapacity(chunk.count)
        written.reserveCapacity(chunk.count)
        for (k, p) in zip(chunk, pseudonyms) {
            guard let id = ids[p] else { continue }
            subjectIDs.append(id)
            written.append(k)
        }
        if !written.isEmpty {
            try await writePIIAndAttributes(conn, profiles, written, subjectIDs: subjectIDs, allNew: inserted.count == written.count)
        }
        var reingested = 0
        if allowReingest, !inserted.isEmpty {
            reingested = try await engine.rows(conn, "DELETE FROM profilevault.suppressed WHERE pseudonym = ANY(\(inserted)::bytea[]) RETURNING 1").count
        }
        return (inserted.count, written.count - inserted.count, chunk.count - written.count, reingested)
    }

    /// Upserts the `pii` and `attributes` rows of the profiles at `chunk` (indices into
    /// `profiles`; one statement each), for the subjects with these row ids (in the chunk's order).
    /// `allNew`: every one of these subjects was created in this transaction (plain inserts).
    func writePIIAndAttributes(_ conn: PostgresConnection, _ profiles: PackedProfiles, _ chunk: some Collection<Int>, subjectIDs: [Int64],
                               allNew: Bool) async throws {
        // The `pii` row: a ciphertext column per PII field and a MAC column per lookup field;
        // an absent value travels as an empty bytea and is stored as NULL.
        var pii = PostgresBindings(capacity: 1 + piiColumns.valueColumns.count)
        try pii.append(subjectIDs)
        let empty = ByteBuffer()
        for c in piiColumns.valueColumns.indices {
            try pii.append(chunk.map { profiles.pii($0, c) ?? empty })
        }
        try await engine.exec(conn, PostgresQuery(unsafeSQL: allNew ? piiInsert : piiUpsert, binds: pii))
        // The attributes: per field, its values and whether each is present.
        var attrs = PostgresBindings(capacity: 1 + 2 * schema.attributeFields.count)
        try attrs.append(subjectIDs)
        for (i, f) in schema.attributeFields.enumerated() {
            let present = chunk.map { profiles.attribute($0, i) != .null }
            switch f.type {
            case .int:
                try attrs.append(try chunk.map { p throws -> Int64 in
                    switch profiles.attribute(p, i) { case .int(let v): v; case .null: 0; default: throw Self.mistyped(f) } })
            case .float:
                try attrs.append(try chunk.map { p throws -> Double in
                    switch profiles.attribute(p, i) { case .float(let v): v; case .int(let v): Double(v); case .null: 0; default: throw Self.mistyped(f) } })
            case .date:
                try attrs.append(try chunk.map { p throws -> Int32 in
                    switch profiles.attribute(p, i) { case .date(let v): v; case .null: 0; default: throw Self.mistyped(f) } })
            case .bool:
                try attrs.append(try chunk.map { p throws -> Bool in
                    switch profiles.attribute(p, i) { case .bool(let v): v; case .null: false; default: throw Self.mistyped(f) } })
            case .string, .category:
                try attrs.append(try chunk.map { p throws -> String in
                    switch profiles.attribute(p, i) { case .text(let v): v; case .null: ""; default: throw Self.mistyped(f) } })
            }
            try attrs.append(present)
        }
        try await engine.exec(conn, PostgresQuery(unsafeSQL: allNew ? attributesInsert : attributesUpsert, binds: attrs))
    }

    /// How many encrypted fields and blind-index entries a `pii` row holds (PostgreSQL adds no
    /// booleans: each test is cast to an integer).
    var storedCountExpressions: (fields: String, macs: String) {
        func sum(_ cs: [PIIColumns.Column]) -> String { cs.isEmpty ? "0" : cs.map { "(\($0.column) IS NOT NULL)::int" }.joined(separator: " + ") }
        return (sum(piiColumns.ciphertext), sum(piiColumns.macs))
    }

    /// At most this many bytes of bound values per statement (far below the 1 GB message limit).
    static let statementBytes = 64 << 20

    /// Advisory lock (namespace, 0): ingest batches (profiles and events) hold it shared,
    /// erasures exclusively.
    static let lockNamespaceSubjects: Int32 = 0x5056_5300   // "PVS"

    static func mistyped(_ f: FieldSpec) -> PostgresStoreError {
        PostgresStoreError(.internalFailure, "field \(f.name): a validated value of another type than the field's")
    }

    // MARK: - Events

    /// Ingests events (`customer_id,kind,item,value,time`) with the SQLite engine's semantics:
    /// every event must belong to a subject already in the store; validated first (unless
    /// `skipInvalid`); idempotent (an event identical in subject, kind, item, value and time to
    /// a stored one is not stored again and counts as `updated`); transactions of
    /// `options.batchSize` records, each with its audit entry.
    public func ingestEvents(_ source: RecordSource, options: IngestOptions = IngestOptions()) throws -> IngestReport {
        let started = Date()
        let path = source.name
        let schema = self.schema
        let columns = ProfileStore.eventColumns
        let types: [String: FieldType] = ["customer_id": .string, "kind": .string, "item": .string, "time": .string]
        guard options.batchSize >= 1 else { throw VaultError(.usage, "the batch size must be at least 1") }
        func reader() throws -> RecordReader {
            try RecordReader(source: source, format: options.format, delimiter: options.delimiter, columns: columns, required: Set(columns), types: types)
        }
        if !options.skipInvalid {
            // Every record valid, and every customer a subject (checked in sets of 4,096).
            let pass1 = try reader()
            var pending: [(line: Int, pseudonym: [UInt8])] = []
            func checkPending() throws {
                guard !pending.isEmpty else { return }
                let known = try knownPseudonyms(Set(pending.map(\.pseudonym)))
                if let missing = pending.first(where: { !known.contains($0.pseudonym) }) {
                    throw VaultError(.invalidInput, RecordIssue.make(file: path, line: missing.line, field: "customer_id", reason: "no subject with this customer ID in the store").description)
                }
                pending.removeAll(keepingCapacity: true)
            }
            while let raw = try pass1.next() {
                switch ProfileStore.validateEvent(raw, file: path, schema: schema) {
                case .failure(let issue): throw issue.error()
                case .success(let e): pending.append((e.line, try pseudonym(ofCustomerID: e.customerID)))
                }
                if pending.count == Self.statementRows { try checkPending() }
            }
            try checkPending()
        }
        let rejects = try RejectsWriter(options, ownFiles: ownFiles)
        let input = try reader()
        var report = IngestReport()
        var done = false, n = 0
        while !done {
            var events: [(line: Int, pseudonym: [UInt8], event: ProfileStore.ValidEvent)] = []
            var rejected = 0, inBatch = 0, firstLine = 0, lastLine = 0
            while inBatch < options.batchSize {
                guard let raw = try input.next() else { done = true; break }
                n += 1
                inBatch += 1
                if firstLine == 0 { firstLine = raw.line }
                lastLine = raw.line
                switch ProfileStore.validateEvent(raw, file: path, schema: schema) {
                case .failure(let issue):
                    rejected += 1
                    rejects?.write(issue)
                case .success(let e):
                    events.append((e.line, try pseudonym(ofCustomerID: e.customerID), e))
                }
            }
            guard inBatch > 0 else { break }
            let work = events, audit = options.audit, first = firstLine, last = lastLine, rejectedBefore = rejected
            let (ins, dup, unknown) = try Self.wait("ingesting events") {
                try await self.writeEvents(work, rejected: rejectedBefore, firstLine: first, lastLine: last, audit: audit)
            }
            for line in unknown {
                rejects?.write(RecordIssue.make(file: path, line: line, field: "customer_id", reason: "no subject with this customer ID in the store"))
            }
            report.inserted += ins
            report.updated += dup
            report.rejected += rejected + unknown.count
            options.progress?(IngestProgress.make(phase: done ? "done" : "ingesting", records: n, bytes: input.bytesRead, totalBytes: source.byteCount))
        }
        try rejects?.finish()
        report.seconds = Date().timeIntervalSince(started)
        return report
    }

    /// Which of `pseudonyms` are subjects now.
    func knownPseudonyms(_ pseudonyms: Set<[UInt8]>) throws -> Set<[UInt8]> {
        let list = pseudonyms.map(bytea)
        return try Self.wait("looking up subjects") { [engine] in
            try await engine.transaction("looking up subjects") { conn in
                var out = Set<[UInt8]>()
                for row in try await engine.rows(conn, "SELECT pseudonym FROM profilevault.subjects WHERE pseudonym = ANY(\(list)::bytea[])") {
                    out.insert(try row.decode(ByteBuffer.self).bytes)
                }
                return out
            }
        }
    }

    /// One transaction of events and its audit entry. Returns the inserted and duplicate counts
    /// and the lines whose customer is not (or no longer) a subject.
    func writeEvents(_ events: [(line: Int, pseudonym: [UInt8], event: ProfileStore.ValidEvent)], rejected: Int, firstLine: Int, lastLine: Int,
                     audit: AuditContext?) async throws -> (inserted: Int, duplicates: Int, unknown: [Int]) {
        // One global order for the rows every batch inserts (their unique key, then the line):
        // two nodes ingesting the same events wait for each other instead of deadlocking.
        let events = events.sorted { a, b in
            if a.pseudonym != b.pseudonym { return a.pseudonym.lexicographicallyPrecedes(b.pseudonym) }
            if a.event.kind != b.event.kind { return a.event.kind < b.event.kind }
            if a.event.time != b.event.time { return a.event.time < b.event.time }
            if a.event.item != b.event.item { return a.event.item < b.event.item }
            if a.event.value != b.event.value { return a.event.value < b.event.value }
            return a.line < b.line
        }
        return try await engine.retryingDeadlocks { try await engine.transaction("ingesting events") { conn in
            // The subjects lock, shared (as profile ingests take it): an erasure, which holds
            // it exclusively, runs before or after this whole transaction, never between two
            // of its statements. Row locks alone deadlocked: this transaction held customer X
            // (an earlier statement) and waited for Y while an erasure held Y and waited for X.
            try await engine.exec(conn, "SELECT pg_advisory_xact_lock_shared(\(Self.lockNamespaceSubjects), 0)")
            let fresh = try await engine.freshIDs(conn, table: "events", inLineOrder: events.map(\.line))
            var ins = 0, dup = 0
            var unknown: [Int] = []
            var start = 0
            while start < events.count {
                var end = start
                var bytes = 0
                while end < events.count, end - start < Self.statementRows,
                      end == start || bytes + events[end].event.item.utf8.count + events[end].event.kind.utf8.count + 96 <= Self.statementBytes {
                    bytes += events[end].event.item.utf8.count + events[end].event.kind.utf8.count + 96
                    end += 1
                }
                let chunk = events[start..<end]
                start += chunk.count
                let wanted = Array(Set(chunk.map(\.pseudonym))).map(bytea)
                var ids: [[UInt8]: Int64] = [:]
                // FOR KEY SHARE: an erasure of one of these subjects waits for this transaction.
                for row in try await engine.rows(conn, "SELECT pseudonym, id FROM profilevault.subjects WHERE pseudonym = ANY(\(wanted)::bytea[]) FOR KEY SHARE") {
                    let (p, id) = try row.decode((ByteBuffer, Int64).self)
                    ids[p.bytes] = id
                }
                var sid: [Int64] = [], kind: [String] = [], item: [String] = [], hash: [ByteBuffer] = [], value: [Double] = [], time: [Int64] = []
                var eid: [Int64] = []
                for (offset, e) in zip(chunk.indices, chunk) {
                    guard let id = ids[e.pseudonym] else { unknown.append(e.line); continue }
                    eid.append(fresh[offset])
                    sid.append(id)
                    kind.append(e.event.kind)
                    item.append(e.event.item)
                    hash.append(bytea(SHA256.hash(Array(e.event.item.utf8))))
                    value.append(e.event.value)
                    time.append(e.event.time)
                }
                guard !sid.isEmpty else { continue }
                let added = try await engine.rows(conn, """
                    INSERT INTO profilevault.events(id, subject_id, kind, item, item_hash, value, time) OVERRIDING SYSTEM VALUE
                    SELECT e, s, k, i, h, v, t FROM unnest(\(eid)::bigint[], \(sid)::bigint[], \(kind)::text[], \(item)::text[], \(hash)::bytea[], \(value)::float8[], \(time)::bigint[])
                        WITH ORDINALITY AS u(e, s, k, i, h, v, t, n) ORDER BY n
                    ON CONFLICT DO NOTHING
                    RETURNING subject_id, time
                    """)
                var newest: [Int64: Int64] = [:]
                for row in added {
                    let (s, t) = try row.decode((Int64, Int64).self)
                    newest[s] = max(newest[s] ?? Int64.min, t)
                }
                ins += added.count
                dup += sid.count - added.count
                if !newest.isEmpty {
                    let (ks, vs) = (Array(newest.keys), newest.keys.map { newest[$0] ?? 0 })
                    try await engine.exec(conn, """
                        UPDATE profilevault.subjects s SET last_activity = greatest(s.last_activity, u.t)
                        FROM unnest(\(ks)::bigint[], \(vs)::bigint[]) AS u(id, t) WHERE s.id = u.id
                        """)
                }
            }
            if let audit {
                try await engine.appendLocked(conn, [audit.record("ingest.events", .create, counts: [
                    ("inserted", Int64(ins)), ("duplicates", Int64(dup)), ("rejected", Int64(rejected + unknown.count)),
                    ("first_line", Int64(firstLine)), ("last_line", Int64(lastLine)),
                ])])
            }
            if ins > 0 { try await engine.bumpPopulationEpoch(conn) }
            return (ins, dup, unknown.sorted())
        } }
    }

    // MARK: - Erasure

    /// Crypto-shredding erasure (as on SQLite): every customer ID must be a subject (an unknown
    /// one refuses the call before anything is erased); then, per subject, in one transaction
    /// with its audit entry: its row is locked, its `pii`, `attributes`, `events`, `consent`
    /// and `consent_state` rows and its `subjects` row (the wrapped data key) are deleted (the
    /// receipt counts each, labelled and ordered as SQLite's), and its pseudonym goes on the
    /// suppression list. Batches of 500 subjects per transaction. Another node's next read
    /// finds no subject. What PostgreSQL keeps afterwards (dead tuples, WAL, replicas, backups)
    /// holds the subject's data only under the deleted key: docs/deployment.md.
    public func erase(customerIDs: [(line: Int, id: String)], file: String?, reason: String, audit: AuditContext) throws -> [ErasureReceipt] {
        // PostgreSQL's text cannot hold U+0000: refused here as on SQLite, before anything is
        // read or erased, not by the server half-way through a batch.
        try StoredText.check(reason, "erasure reason")
        var resolved: [(id: String, pseudonym: [UInt8])] = []
        for (_, id) in customerIDs { resolved.append((id, try pseudonym(ofCustomerID: id))) }
        let known = try knownPseudonyms(Set(resolved.map(\.pseudonym)))
        for ((line, _), r) in zip(customerIDs, resolved) where !known.contains(r.pseudonym) {
            if let file { throw VaultError(.notFound, "\(file):\(line): no subject with this customer ID") }
            throw VaultError(.notFound, "no subject with this customer ID")
        }
        // A customer named again (the same ID, or one that normalises to it) is erased once;
        // its later mentions get receipts that remove nothing, as on SQLite.
        var seen = Set<[UInt8]>()
        let subjects = resolved.map { (id: $0.id, pseudonym: $0.pseudonym, again: !seen.insert($0.pseudonym).inserted) }
        var receipts: [ErasureReceipt] = []
        for start in stride(from: 0, to: subjects.count, by: 500) {
            let chunk = Array(subjects[start..<min(start + 500, subjects.count)])
            receipts += try Self.wait("erasing subjects") { try await self.erase(chunk, reason: reason, audit: audit) }
        }
        return receipts
    }

    /// One transaction of erasures; `again` marks a customer erased earlier in the same call.
    /// A subject gone meanwhile (erased by another node) refuses the batch, unless
    /// `goneIsErased` (retention, which picked its subjects in an earlier read): then it gets a
    /// receipt that removes nothing, as on SQLite.
    ///
    /// A batch costs a fixed number of statements, not a number per subject: one statement
    /// locks the batch's subjects and deletes their rows from every table (data-modifying
    /// CTEs; the foreign keys of `events`, `consent`, `consent_state` and `restriction`, and
    /// migration 11's check, are checked at the end of that statement, when every row is
    /// gone), returning what it removed per subject; one audit append writes an entry per
    /// subject (each entry's hash is its receipt); one statement puts the pseudonyms on the
    /// suppression list.
    func erase(_ subjects: [(id: String, pseudonym: [UInt8], again: Bool)], reason: String, audit: AuditContext,
               goneIsErased: Bool = false) async throws -> [ErasureReceipt] {
        try await engine.transaction("erasing subjects") { conn in
            try await self.eraseLocked(conn, subjects, reason: reason, audit: audit, goneIsErased: goneIsErased)
        }
    }

    /// The erasure transaction's work on `conn` (inside a transaction the caller opened and
    /// commits): ``erase(_:reason:audit:goneIsErased:)``, and a restore re-applying erasures.
    func eraseLocked(_ conn: PostgresConnection, _ subjects: [(id: String, pseudonym: [UInt8], again: Bool)], reason: String, audit: AuditContext,
                     goneIsErased: Bool = false) async throws -> [ErasureReceipt] {
        let (fieldCount, macCount) = storedCountExpressions
        let fields = [schema.subjectIDField] + schema.fields.map(\.name)
        let labels = ["pii_fields", "blind_index_entries", "attribute_rows", "events", "consent_entries", "consent_states", "wrapped_data_key"]
        let nothing = labels.map { ($0, Int64(0)) }
        let wanted = subjects.filter { !$0.again }.map { bytea($0.pseudonym) }
        // Exclusive: no ingest batch is in flight on any node while subjects are erased.
        try await engine.exec(conn, "SELECT pg_advisory_xact_lock(\(Self.lockNamespaceSubjects), 0)")
        var binds = PostgresBindings()
        binds.append(wanted)
        // The row locks (in id order, as ingest takes them) wait for any statement still
        // holding these subjects; the deletes then see every committed row.
        let rows = try await engine.rows(conn, PostgresQuery(unsafeSQL: """
            WITH s AS (SELECT id, pseudonym FROM profilevault.subjects WHERE pseudonym = ANY($1::bytea[]) ORDER BY id FOR UPDATE),
            p AS (DELETE FROM profilevault.pii WHERE subject_id IN (SELECT id FROM s)
                  RETURNING subject_id, (\(fieldCount))::bigint AS f, (\(macCount))::bigint AS m),
            a AS (DELETE FROM profilevault.attributes WHERE subject_id IN (SELECT id FROM s) RETURNING subject_id),
            e AS (DELETE FROM profilevault.events WHERE subject_id IN (SELECT id FROM s) RETURNING subject_id),
            c AS (DELETE FROM profilevault.consent WHERE subject_id IN (SELECT id FROM s) RETURNING subject_id),
            cs AS (DELETE FROM profilevault.consent_state WHERE subject_id IN (SELECT id FROM s) RETURNING subject_id),
            r AS (DELETE FROM profilevault.restriction WHERE subject_id IN (SELECT id FROM s) RETURNING subject_id),
            d AS (DELETE FROM profilevault.subjects WHERE id IN (SELECT id FROM s) RETURNING id)
            SELECT s.pseudonym,
                   coalesce((SELECT sum(f) FROM p WHERE p.subject_id = s.id), 0)::bigint,
                   coalesce((SELECT sum(m) FROM p WHERE p.subject_id = s.id), 0)::bigint,
                   (SELECT count(*) FROM a WHERE a.subject_id = s.id),
                   (SELECT count(*) FROM e WHERE e.subject_id = s.id),
                   (SELECT count(*) FROM c WHERE c.subject_id = s.id),
                   (SELECT count(*) FROM cs WHERE cs.subject_id = s.id),
                   (SELECT count(*) FROM d WHERE d.id = s.id),
                   (floor(extract(epoch FROM clock_timestamp()) * 1000))::bigint
            FROM s
            """, binds: binds))
        var removedBy: [[UInt8]: [(String, Int64)]] = [:]
        var now = AuditLog.nowMillis
        for row in rows {
            let (pseudonym, f, m, a, e, c, cs, d, t) = try row.decode((ByteBuffer, Int64, Int64, Int64, Int64, Int64, Int64, Int64, Int64).self)
            removedBy[pseudonym.bytes] = zip(labels, [f, m, a, e, c, cs, d]).map { ($0, $1) }
            now = t
        }
        if rows.isEmpty {
            now = try await engine.rows(conn, "SELECT (floor(extract(epoch FROM clock_timestamp()) * 1000))::bigint").first?.decode(Int64.self) ?? now
        }
        var records: [AuditRecord] = []
        var removedInOrder: [[(String, Int64)]] = []
        for (_, p, again) in subjects {
            let removed: [(String, Int64)]
            if again {
                removed = nothing
            } else if let r = removedBy[p] {
                removed = r
            } else if goneIsErased {
                removed = nothing
            } else {
                throw PostgresStoreError(.notFound, "a subject was erased by another node meanwhile; nothing of this batch was erased")
            }
            removedInOrder.append(removed)
            records.append(audit.record("erase", .delete, subject: p, fields: fields, detail: "reason \(reason)", counts: removed))
        }
        // The request register keeps the pseudonym and metadata, not the sealed texts.
        var requestBinds = PostgresBindings()
        requestBinds.append(subjects.map { bytea($0.pseudonym) })
        try await engine.exec(conn, PostgresQuery(unsafeSQL: """
            UPDATE profilevault.requests SET customer_id_sealed = NULL, note_sealed = NULL, extend_reason_sealed = NULL,
                deny_reason_sealed = NULL WHERE pseudonym = ANY($1::bytea[])
            """, binds: requestBinds))
        let entries = try await engine.appendLockedEntries(conn, records)
        // The suppression list names each subject's receipt; a customer named twice keeps
        // its last receipt, as SQLite's INSERT OR REPLACE in file order leaves it.
        var last: [[UInt8]: Int] = [:]
        for (i, s) in subjects.enumerated() { last[s.pseudonym] = i }
        let kept = last.values.sorted()
        var suppressBinds = PostgresBindings()
        suppressBinds.append(kept.map { bytea(subjects[$0].pseudonym) })
        suppressBinds.append(now)
        suppressBinds.append(reason)
        suppressBinds.append(kept.map { entries[$0].sequence })
        suppressBinds.append(kept.map { AuditLog.hex(entries[$0].hash) })
        try await engine.exec(conn, PostgresQuery(unsafeSQL: """
            INSERT INTO profilevault.suppressed(pseudonym, erased_at, reason, receipt_seq, receipt)
            SELECT p, $2, $3, q, r FROM unnest($1::bytea[], $4::bigint[], $5::text[]) AS t(p, q, r)
            ON CONFLICT (pseudonym) DO UPDATE SET erased_at = EXCLUDED.erased_at, reason = EXCLUDED.reason,
                receipt_seq = EXCLUDED.receipt_seq, receipt = EXCLUDED.receipt
            """, binds: suppressBinds))
        try await engine.bumpPopulationEpoch(conn)
        return subjects.indices.map { i in
            ErasureReceipt.make(customerID: subjects[i].id, erasedAtMillis: now, reason: reason, removed: removedInOrder[i],
                                auditSequence: entries[i].sequence, receipt: AuditLog.hex(entries[i].hash))
        }
    }

    /// Stored row counts without decrypting (for tests): subjects, encrypted PII fields,
    /// blind-index entries, attribute rows, events.
    func storedCounts() throws -> [Int64] {
        let (f, m) = storedCountExpressions
        return try Self.wait("counting rows") { [engine] in
            try await engine.transaction("counting rows") { conn in
                guard let row = try await engine.rows(conn, PostgresQuery(unsafeSQL: """
                    SELECT (SELECT count(*) FROM profilevault.subjects), (SELECT coalesce(sum(\(f)), 0)::bigint FROM profilevault.pii),
                           (SELECT coalesce(sum(\(m)), 0)::bigint FROM profilevault.pii), (SELECT count(*) FROM profilevault.attributes),
                           (SELECT count(*) FROM profilevault.events)
                    """)).first else { return [] }
                let (a, b, c, d, e) = try row.decode((Int64, Int64, Int64, Int64, Int64).self)
                return [a, b, c, d, e]
            }
        }
    }
}

/// Set by ``PostgresProfiles/waitForPass(_:_:yielded:)`` when it gave its transaction up for a
/// session waiting on it (an error thrown inside a transaction comes back wrapped).
final class YieldFlag: Sendable {
    private let value = Mutex(false)
    func set() { value.withLock { $0 = true } }
    var isSet: Bool { value.withLock { $0 } }
}
