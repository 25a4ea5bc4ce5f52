import Foundation
import PostgresNIO
import Testing
import VaultAudit
import VaultCrypto
import VaultPolicy
@testable import VaultPostgres
@testable import VaultStore
import VaultValues

/// Both engines with the same profiles and events (customers 0..<20; customers 0..<5 have
/// events in 2035, so their last activity is years after everyone else's).
struct EnginePair: Sendable {
    let cluster: ProfileCluster
    let sqlite: ProfileStore
    let pg: PostgresProfiles

    static let events = """
        customer_id,kind,item,value,time
        \(Rows.id(0)),purchase,sku-1,19.5,2035-01-01T12:00:00Z
        \(Rows.id(0)),purchase,sku-2,5,2026-10-01T12:00:00Z
        \(Rows.id(0)),rating,film-1,4,2026-10-02T08:00:00Z
        \(Rows.id(1)),rating,film-9,4,2035-10-02T08:00:00Z
        \(Rows.id(2)),purchase,sku-1,7,2035-10-03T09:30:00Z
        \(Rows.id(3)),purchase,sku-3,7,2035-10-03T09:30:00Z
        \(Rows.id(4)),rating,film-2,2,2035-10-03T09:30:00Z
        \(Rows.id(7)),purchase,sku-1,7,2026-10-03T09:30:00Z
        \(Rows.id(7)),purchase,sku-4,7,2026-11-03T09:30:00Z
        \(Rows.id(8)),rating,film-1,5,2026-10-03T09:30:00Z
        \(Rows.id(9)),purchase,sku-1,1,2026-09-03T09:30:00Z

        """

    static func with(_ body: (EnginePair) async throws -> Void) async throws {
        try await ProfileCluster.with { cluster in
            let profiles = try cluster.write("p.csv", Rows.csv(0..<20))
            let events = try cluster.write("e.csv", Self.events)
            let sqliteDir = cluster.dir + "/sqlite"
            try FileManager.default.createDirectory(atPath: sqliteDir, withIntermediateDirectories: true)
            let sqlite = try ProfileStore.create(path: sqliteDir + "/store.sqlite", keyring: cluster.keyring, schema: repositorySchema, policyVersion: "test")
            let pg = try await cluster.node()
            var options = IngestOptions()
            options.audit = context
            options.holdForValidation = 0
            let o = options
            _ = try sqlite.ingestProfiles(.file(profiles), options: o)
            _ = try await onThread { try pg.ingestProfiles(.file(profiles), options: o) }
            _ = try sqlite.ingestEvents(.file(events), options: o)
            _ = try await onThread { try pg.ingestEvents(.file(events), options: o) }
            var failure: (any Error)?
            do { try await body(EnginePair(cluster: cluster, sqlite: sqlite, pg: pg)) } catch { failure = error }
            try? sqlite.close()
            await pg.engine.close()
            if let failure { throw failure }
        }
    }

    /// Every audit entry after `after`, without its times (the engines' clocks differ).
    func entries(after: Int64) async throws -> (sqlite: [String], pg: [String]) {
        // The entry's own keys, without its times (SQLite's export adds the chain's columns).
        func timeless(_ text: Substring) -> (Int64, String)? {
            guard case .object(let pairs)? = try? JSONValue.parse(String(text)), case .int(let seq)? = JSONValue.object(pairs)["metadata.sequence"] else {
                return nil
            }
            let kept = pairs.filter { !["time", "time_dt", "prev_hash", "hash"].contains($0.0) && !$0.0.hasPrefix("checkpoint") }
            return (seq, JSONValue.object(kept).canonicalString())
        }
        let export = try sqlite.exportAudit(sinceMillis: nil, untilMillis: nil, format: .jsonl)
        let s = String(decoding: export.bytes, as: UTF8.self).split(separator: "\n").compactMap(timeless).filter { $0.0 > after }.map(\.1)
        let p = try await TestDatabase.strings(cluster.db, "SELECT entry FROM profilevault.audit_log WHERE seq > \(after) ORDER BY seq")
        return (s, p.compactMap { timeless(Substring($0)) }.map(\.1))
    }

    func auditHeads() async throws -> (sqlite: Int64, pg: Int64) {
        (try sqlite.status().auditEntries, try await pg.engine.auditHead().entries)
    }

    /// Both engines' answers to `body`, or their errors' kinds and messages.
    func both<T: Sendable>(_ body: @escaping @Sendable (any StorageEngineCalls) throws -> T) async -> (Result<T, VaultError>, Result<T, VaultError>) {
        @Sendable func run(_ e: any StorageEngineCalls) -> Result<T, VaultError> {
            do { return .success(try body(e)) } catch let e as VaultError { return .failure(e) } catch {
                return .failure(VaultError(.internalFailure, "not a VaultError: \(error)"))
            }
        }
        let s = run(sqlite)
        let pg = self.pg
        let p = (try? await onThread { run(pg) }) ?? .failure(VaultError(.internalFailure, "no thread"))
        return (s, p)
    }
}

/// The methods under test, on both engines (the lead declares `StorageEngine` on PostgreSQL).
protocol StorageEngineCalls: Sendable {
    func setConsent(_ ids: [(line: Int, id: String)], file: String?, purpose: String, granted: Bool,
                    source: String?, policyVersion: String, audit: AuditContext) throws -> Int
    func hasConsent(customerID: String, purpose: String) throws -> Bool
    func consentState(customerID: String) throws -> [String: ConsentState]?
    func consentHistory(customerID: String) throws -> [ConsentEntry]?
    func readProfile(pseudonym: [UInt8], fields wanted: Set<String>, consentPurpose: String?) throws -> ProfileRead
    func accessExport(customerID: String) throws -> AccessExport?
    func rawRows(customerID: String) throws -> RawSubjectRows?
    func subjectItems(customerIDs: [String], kind: String, consentPurpose: String?, segmentAttribute: String?) throws -> [SubjectItems]
    func applyRetention(_ rules: [RetentionRule], asOf: Int64, dryRun: Bool, audit: AuditContext) throws -> RetentionReport
    func erase(customerIDs: [(line: Int, id: String)], file: String?, reason: String, audit: AuditContext) throws -> [ErasureReceipt]
    func pseudonym(ofCustomerID id: String) throws -> [UInt8]
    func exists(customerID: String) throws -> Bool
    func recordPolicy(_ record: PolicyRecord, previous: Int64?, periods: [String: Int], audit: AuditRecord) throws -> PolicyRecord
    func policyHistory() throws -> [PolicyRecord]
}
extension ProfileStore: StorageEngineCalls {}
extension PostgresProfiles: StorageEngineCalls {}

/// Results of both engines compared: equal values, or errors of the same kind and message.
func expectSame<T: Equatable>(_ r: (Result<T, VaultError>, Result<T, VaultError>), _ what: String,
                              sourceLocation: SourceLocation = #_sourceLocation) {
    switch r {
    case (.success(let a), .success(let b)): #expect(a == b, "\(what)", sourceLocation: sourceLocation)
    case (.failure(let a), .failure(let b)):
        #expect(a.kind == b.kind && a.message == b.message, "\(what): \(a.message) vs \(b.message)", sourceLocation: sourceLocation)
    default: Issue.record("\(what): the engines disagree: \(r.0) vs \(r.1)", sourceLocation: sourceLocation)
    }
}

/// A consent entry without its time.
struct Timeless: Equatable, Sendable {
    var purpose: String, granted: Bool, actor: String, source: String?, policyVersion: String
    init(_ e: ConsentEntry) { (purpose, granted, actor, source, policyVersion) = (e.purpose, e.granted, e.actor, e.source, e.policyVersion) }
}

let officer = AuditContext(actor: "officer", role: "privacy_officer", requestID: "req-c")

@Suite(.serialized) struct PostgresConsentTests {
    /// The same grants and revocations (bulk with repeats, single, no-ops, a source) on both
    /// engines: the same counts, states, histories, consent-checked reads, audit entries.
    @Test func consentMatchesSQLite() async throws {
        try await EnginePair.with { pair in
            let start = try await pair.auditHeads()
            #expect(start.sqlite == start.pg)
            let all = Set(repositorySchema.fields.map(\.name))
            let grantList: [(line: Int, id: String)] = (0..<12).map { (line: $0 + 1, id: Rows.id($0)) } + [(line: 13, id: Rows.id(3))]
            let steps: [(ids: [(line: Int, id: String)], file: String?, purpose: String, granted: Bool, source: String?)] = [
                (grantList, "grant.txt", "analytics", true, "web-form"),
                ([(1, Rows.id(2)), (2, Rows.id(15)), (3, Rows.id(2))], "revoke.txt", "analytics", false, nil),
                ([(1, Rows.id(4))], nil, "analytics", true, "again"),                 // already granted: no change
                ([(1, Rows.id(16))], nil, "analytics", false, "never granted"),       // never granted: no change
                ([(1, Rows.id(5))], nil, "model_training", true, "app"),
                ([(1, Rows.id(2))], nil, "analytics", true, nil),                     // granted again after a revocation
            ]
            for (i, s) in steps.enumerated() {
                let r = await pair.both { try $0.setConsent(s.ids, file: s.file, purpose: s.purpose, granted: s.granted, source: s.source,
                                                              policyVersion: "2026-11-01", audit: officer) }
                expectSame(r, "step \(i)")
            }
            if case (.success(let first), _) = await pair.both({ try $0.consentHistory(customerID: Rows.id(2)) }) {
                #expect(first?.map(\.granted) == [true, false, true])
            }
            for i in 0..<20 {
                let id = Rows.id(i)
                let states = await pair.both { try $0.consentState(customerID: id).map { $0.mapValues(\.granted) } }
                expectSame(states, "state \(i)")
                expectSame(await pair.both { try $0.consentHistory(customerID: id)?.map(Timeless.init) }, "history \(i)")
                for purpose in ["analytics", "model_training", "marketing"] {
                    expectSame(await pair.both { try $0.hasConsent(customerID: id, purpose: purpose) }, "has \(i) \(purpose)")
                    let p = try pair.pg.pseudonym(ofCustomerID: id)
                    expectSame(await pair.both { try $0.readProfile(pseudonym: p, fields: all, consentPurpose: purpose) }, "read \(i) \(purpose)")
                }
                // The state's time is the time of the ledger entry that set it.
                let pgStates = try #require(try await onThread { try pair.pg.consentState(customerID: id) })
                let pgHistory = try #require(try await onThread { try pair.pg.consentHistory(customerID: id) })
                for (purpose, state) in pgStates {
                    #expect(state.sinceMillis == pgHistory.last { $0.purpose == purpose }?.timeMillis)
                }
            }
            // The three outcomes, on PostgreSQL.
            let read = { @Sendable (i: Int, purpose: String) throws -> ProfileRead in
                try pair.pg.readProfile(pseudonym: try pair.pg.pseudonym(ofCustomerID: Rows.id(i)), fields: all, consentPurpose: purpose)
            }
            guard case .found(let view) = try await onThread({ try read(1, "analytics") }) else { Issue.record("granted: not found"); return }
            #expect(view.customerID == Rows.id(1))
            #expect(try await onThread { try read(15, "analytics") } == .consentMissing)   // never granted
            #expect(try await onThread { try read(16, "analytics") } == .consentMissing)   // its revocation was a no-op
            #expect(try await onThread { try read(5, "marketing") } == .consentMissing)
            #expect(try await onThread { try read(2, "analytics") } != .consentMissing)    // granted again after a revocation
            #expect(try await onThread { try pair.pg.readProfile(pseudonym: try pair.pg.pseudonym(ofCustomerID: "nobody"), fields: all,
                                                                 consentPurpose: "analytics") } == .notFound)
            // Unknown subjects: nil state and history, no consent, as on SQLite.
            expectSame(await pair.both { try $0.consentState(customerID: "PGCUST-nobody").map { $0.mapValues(\.granted) } }, "unknown state")
            #expect(try await onThread { try pair.pg.consentHistory(customerID: "PGCUST-nobody") } == nil)
            #expect(try await onThread { try pair.pg.hasConsent(customerID: "PGCUST-nobody", purpose: "analytics") } == false)
            // The same audit entries, in the same order, but for their times.
            let (s, p) = try await pair.entries(after: start.sqlite)
            #expect(s.count == steps.count && s == p)
            #expect(p.first?.contains("\"changed\":12") == true && p.first?.contains("\"unchanged\":1") == true)
            #expect(p.last?.contains(AuditLog.hex(try pair.pg.pseudonym(ofCustomerID: Rows.id(2)))) == true)
            #expect(try await pair.pg.engine.verifyAudit().ok)
        }
    }

    /// An unknown customer anywhere in a list (here past the first transaction of 2,000)
    /// refuses the whole call with SQLite's error, and nothing is written: no ledger row, no
    /// state, no audit entry.
    @Test func anUnknownCustomerRefusesTheWholeCall() async throws {
        try await EnginePair.with { pair in
            let start = try await pair.auditHeads()
            var ids = (0..<2_500).map { (line: $0 + 1, id: Rows.id($0 % 20)) }
            ids.append((2_501, "PGCUST-nobody"))
            let list = ids
            let r = await pair.both { try $0.setConsent(list, file: "ids.txt", purpose: "analytics", granted: true, source: nil, policyVersion: "v", audit: officer) }
            expectSame(r, "unknown in a file")
            if case .failure(let e) = r.1 { #expect(e.kind == .notFound && e.message == "ids.txt:2501: no subject with this customer ID") }
            else { Issue.record("an unknown customer was accepted") }
            let one = await pair.both { try $0.setConsent([(1, "PGCUST-nobody")], file: nil, purpose: "analytics", granted: true, source: nil,
                                                          policyVersion: "v", audit: officer) }
            expectSame(one, "unknown alone")
            #expect(try await pair.cluster.db.count("SELECT count(*) FROM profilevault.consent") == 0)
            #expect(try await pair.cluster.db.count("SELECT count(*) FROM profilevault.consent_state") == 0)
            #expect(try await pair.auditHeads() == start)
            // An erased customer is unknown too.
            _ = try await onThread { try pair.pg.erase(customerIDs: [(1, Rows.id(3))], file: nil, reason: "request", audit: officer) }
            _ = try pair.sqlite.erase(customerIDs: [(1, Rows.id(3))], file: nil, reason: "request", audit: officer)
            let erased = await pair.both { try $0.setConsent([(1, Rows.id(1)), (2, Rows.id(3))], file: "f", purpose: "analytics", granted: true,
                                                             source: nil, policyVersion: "v", audit: officer) }
            expectSame(erased, "erased")
            #expect(try await pair.cluster.db.count("SELECT count(*) FROM profilevault.consent") == 0)
            // A transaction whose subject was erased by another node after the IDs were
            // resolved (simulated: the batch reaches the writer now) is refused whole: no ledger
            // row, no state, no audit entry for the subjects still there.
            let heads0 = try await pair.auditHeads()
            let batch = [try pair.pg.pseudonym(ofCustomerID: Rows.id(1)), try pair.pg.pseudonym(ofCustomerID: Rows.id(3))]
            do {
                _ = try await pair.pg.writeConsent(batch, purpose: "analytics", granted: true, source: nil, policyVersion: "v", now: 1,
                                                   single: nil, audit: officer)
                Issue.record("a batch naming an erased subject was written")
            } catch let e as PostgresStoreError {
                #expect(e.kind == .notFound && e.message.contains("erased by another node"))
            }
            #expect(try await pair.cluster.db.count("SELECT count(*) FROM profilevault.consent") == 0)
            #expect(try await pair.cluster.db.count("SELECT count(*) FROM profilevault.consent_state") == 0)
            #expect(try await pair.auditHeads() == heads0)
            // A bulk change in two transactions: two entries, counts summed.
            let bulk = (0..<2_500).map { (line: $0 + 1, id: Rows.id([0, 1, 2, 4, 5][$0 % 5])) }
            let n = await pair.both { try $0.setConsent(bulk, file: "ids.txt", purpose: "analytics", granted: true, source: nil, policyVersion: "v", audit: officer) }
            expectSame(n, "bulk")
            let heads = try await pair.auditHeads()
            #expect(heads.sqlite == heads.pg)
            let (s, p) = try await pair.entries(after: heads.pg - 2)
            #expect(s == p && p.count == 2 && p.allSatisfy { $0.contains("consent.grant") })
        }
    }

    /// The access export: the same decrypted profile, events, consent ledger and audit entries
    /// (but for times) on both engines; nil for an unknown or erased subject.
    @Test func accessExportsMatchSQLite() async throws {
        try await EnginePair.with { pair in
            for purpose in ["analytics", "model_training"] {
                _ = await pair.both { try $0.setConsent([(1, Rows.id(0))], file: nil, purpose: purpose, granted: true, source: "form", policyVersion: "p", audit: officer) }
            }
            _ = await pair.both { try $0.setConsent([(1, Rows.id(0))], file: nil, purpose: "analytics", granted: false, source: nil, policyVersion: "p", audit: officer) }
            for i in [0, 1, 7, 12] {
                let id = Rows.id(i)
                let s = try #require(try pair.sqlite.accessExport(customerID: id))
                let p = try #require(try await onThread { try pair.pg.accessExport(customerID: id) })
                #expect(p.customerID == s.customerID && p.pseudonym == s.pseudonym && p.profile == s.profile, "\(i)")
                #expect(p.events.map { "\($0.kind) \($0.item) \($0.value) \($0.time)" } == s.events.map { "\($0.kind) \($0.item) \($0.value) \($0.time)" })
                #expect(p.consent.map(Timeless.init) == s.consent.map(Timeless.init))
                #expect(p.lastActivity == s.lastActivity || (p.lastActivity >= p.createdAt && s.lastActivity >= s.createdAt && i >= 5))
                #expect(p.createdAt <= p.updatedAt && p.updatedAt <= p.lastActivity)
                func timeless(_ e: [String]) -> [String] {
                    e.map { t in
                        guard case .object(let kv)? = try? JSONValue.parse(t) else { return t }
                        return JSONValue.object(kv.filter { !["time", "time_dt", "metadata.sequence"].contains($0.0) }).canonicalString()
                    }
                }
                #expect(timeless(p.auditEntries) == timeless(s.auditEntries), "\(i)")
            }
            let zero = try #require(try await onThread { try pair.pg.accessExport(customerID: Rows.id(0)) })
            #expect(zero.events.count == 3 && zero.consent.count == 3 && zero.auditEntries.count == 3)
            #expect(zero.events.map(\.time) == zero.events.map(\.time).sorted())
            #expect(try await onThread { try pair.pg.accessExport(customerID: "PGCUST-nobody") } == nil)
            _ = try await onThread { try pair.pg.erase(customerIDs: [(1, Rows.id(0))], file: nil, reason: "request", audit: officer) }
            #expect(try await onThread { try pair.pg.accessExport(customerID: Rows.id(0)) } == nil)
        }
    }

    /// A subject's own items: equal on both engines for a consent purpose, none, an unknown
    /// customer, a repeated one, a segment attribute; a non-categorical segment is SQLite's
    /// usage error.
    @Test func subjectItemsMatchSQLite() async throws {
        try await EnginePair.with { pair in
            _ = await pair.both { try $0.setConsent([(1, Rows.id(0)), (2, Rows.id(7)), (3, Rows.id(9))], file: nil, purpose: "model_training",
                                                    granted: true, source: nil, policyVersion: "p", audit: officer) }
            _ = await pair.both { try $0.setConsent([(1, Rows.id(9))], file: nil, purpose: "model_training", granted: false, source: nil, policyVersion: "p", audit: officer) }
            let ids = [Rows.id(0), Rows.id(7), Rows.id(9), Rows.id(8), "PGCUST-nobody", Rows.id(0), Rows.id(1)]
            @Sendable func flat(_ r: [SubjectItems]) -> [String] {
                r.map { "\($0.customerID) \(AuditLog.hex($0.pseudonym)) \($0.items.map { $0.sorted().joined(separator: ",") } ?? "nil") \($0.consent) \($0.segment ?? "-")" }
            }
            for purpose in ["model_training", "analytics", nil] as [String?] {
                for kind in ["purchase", "rating", "nothing"] {
                    for segment in ["country", nil] as [String?] {
                        expectSame(await pair.both { flat(try $0.subjectItems(customerIDs: ids, kind: kind, consentPurpose: purpose, segmentAttribute: segment)) },
                                   "\(purpose ?? "nil") \(kind) \(segment ?? "nil")")
                    }
                }
            }
            let r = try await onThread { try pair.pg.subjectItems(customerIDs: ids, kind: "purchase", consentPurpose: "model_training", segmentAttribute: "country") }
            #expect(r[0].items == ["sku-1", "sku-2"] && r[0].consent && r[0].segment == "DE")
            #expect(r[1].items == ["sku-1", "sku-4"] && r[2].items == [] && !r[2].consent && r[2].segment == nil)
            #expect(r[4].items == nil && !r[4].consent)
            for bad in ["age", "email", "nope", "country\"; DROP TABLE profilevault.events; --"] {
                expectSame(await pair.both { flat(try $0.subjectItems(customerIDs: ids, kind: "purchase", consentPurpose: nil, segmentAttribute: bad)) }, bad)
            }
            #expect(try await pair.cluster.db.count("SELECT count(*) FROM profilevault.events") == 11)
        }
    }

    /// The raw rows: the same pseudonym, key version, fields with ciphertext, blind-index
    /// fields and attributes (rendered alike) on both engines; hex ciphertext, never plaintext.
    @Test func rawRowsMatchSQLiteAndHoldNoPlaintext() async throws {
        try await EnginePair.with { pair in
            for i in [0, 1, 3, 10] {   // customer 3 has no phone and no income
                let s = try #require(try pair.sqlite.rawRows(customerID: Rows.id(i)))
                let p = try #require(try await onThread { try pair.pg.rawRows(customerID: Rows.id(i)) })
                #expect(p.pseudonymHex == s.pseudonymHex && p.kekVersion == s.kekVersion)
                #expect(p.pii.map(\.field) == s.pii.map(\.field) && p.blindIndex.map(\.field) == s.blindIndex.map(\.field))
                #expect(p.blindIndex.map(\.macHex) == s.blindIndex.map(\.macHex))   // keyed MACs: the same keyring, the same entries
                #expect(p.attributes.map(\.name) == s.attributes.map(\.name) && p.attributes.map(\.value) == s.attributes.map(\.value), "\(i)")
                #expect(p.wrappedDEKHex != s.wrappedDEKHex && !p.wrappedDEKHex.isEmpty)
                let row = Rows.row(i)
                let dump = ([p.pseudonymHex, p.wrappedDEKHex] + p.pii.map(\.ciphertextHex) + p.blindIndex.map(\.macHex)).joined(separator: " ")
                for value in [row[0], row[1], row[2], row[3], row[4]] where value.utf8.count >= 10 {
                    #expect(!dump.contains(AuditLog.hex(Array(value.utf8))) && !dump.contains(value))
                }
            }
            #expect(try await onThread { try pair.pg.rawRows(customerID: "PGCUST-nobody") } == nil)
        }
    }

    /// Retention: the same dry-run and applied reports, the same audit entries and the same
    /// subjects and events left on both engines; a dry run deletes nothing; erased subjects'
    /// consent rows go with them.
    @Test func retentionMatchesSQLite() async throws {
        try await EnginePair.with { pair in
            _ = await pair.both { try $0.setConsent((0..<20).map { ($0 + 1, Rows.id($0)) }, file: "all", purpose: "analytics", granted: true,
                                                    source: nil, policyVersion: "p", audit: officer) }
            let start = try await pair.auditHeads()
            let day = 86_400
            // As of one day after every subject's last activity but the 2035 ones, three years on.
            let asOf = Int64(Date().timeIntervalSince1970) + Int64(1095 * day + day)
            let rules = [RetentionRule(category: "user.behavior.purchase_history", keepSeconds: 30 * day, keepText: "30d", after: .eventTime),
                         RetentionRule(category: "user.behavior", keepSeconds: 3650 * day, keepText: "3650d", after: .eventTime),
                         RetentionRule(category: "user.contact", keepSeconds: 1095 * day, keepText: "1095d", after: .lastActivity)]
            let before = try pair.sqlite.storedCounts().map(Int64.init)
            #expect(try await onThread { try pair.pg.storedCounts() } == before)
            let dry = await pair.both { let r = try $0.applyRetention(rules, asOf: asOf, dryRun: true, audit: officer); return [r.eventsDeleted, r.subjectsErased, r.dryRun ? 1 : 0] }
            expectSame(dry, "dry run")
            if case .success(let d) = dry.1 { #expect(d == [4, 15, 1]) }
            #expect(try await onThread { try pair.pg.storedCounts() } == before)
            #expect(try await pair.cluster.db.count("SELECT count(*) FROM profilevault.consent") == 20)
            let afterDry = try await pair.entries(after: start.sqlite)
            #expect(afterDry.sqlite == afterDry.pg && afterDry.pg.count == 1)
            let applied = await pair.both { let r = try $0.applyRetention(rules, asOf: asOf, dryRun: false, audit: officer); return [r.eventsDeleted, r.subjectsErased, r.dryRun ? 1 : 0] }
            expectSame(applied, "apply")
            if case .success(let a) = applied.1 { #expect(a == [4, 15, 0]) }
            let after = try pair.sqlite.storedCounts().map(Int64.init)
            #expect(try await onThread { try pair.pg.storedCounts() } == after)
            #expect(after[0] == 5 && after[4] == 6)
            for i in 0..<20 {
                let e = await pair.both { try $0.exists(customerID: Rows.id(i)) }
                expectSame(e, "exists \(i)")
                if case .success(let x) = e.1 { #expect(x == (i < 5)) }
            }
            // The erased subjects' consent went with them; the others' stayed.
            #expect(try await pair.cluster.db.count("SELECT count(*) FROM profilevault.consent") == 5)
            #expect(try await pair.cluster.db.count("SELECT count(*) FROM profilevault.consent_state") == 5)
            let (s, p) = try await pair.entries(after: start.sqlite)
            #expect(s == p && p.count == 1 + 2 + 15)   // dry run, two kinds' deletions (rating: none), 15 erasures
            #expect(p.dropFirst().first?.contains("retention.events") == true && p.last?.contains("\"consent_entries\":1") == true)
            // Again: nothing left to do, the same on both.
            expectSame(await pair.both { let r = try $0.applyRetention(rules, asOf: asOf, dryRun: false, audit: officer); return [r.eventsDeleted, r.subjectsErased] }, "again")
            #expect(try await pair.pg.engine.verifyAudit().ok)
        }
    }

    /// Erasure deletes the subject's consent ledger and state in its transaction and reports
    /// them as SQLite does (same labels, order and counts); nothing of the subject is left in
    /// any table; consent for it is refused afterwards.
    @Test func erasureRemovesConsentRows() async throws {
        try await EnginePair.with { pair in
            for (purpose, granted) in [("analytics", true), ("model_training", true), ("analytics", false)] {
                _ = await pair.both { try $0.setConsent([(1, Rows.id(7)), (2, Rows.id(8))], file: nil, purpose: purpose, granted: granted,
                                                        source: "s", policyVersion: "p", audit: officer) }
            }
            let p7 = try pair.pg.pseudonym(ofCustomerID: Rows.id(7))
            let sid = try await pair.cluster.db.count("SELECT id FROM profilevault.subjects WHERE pseudonym = '\\x\(AuditLog.hex(p7))'::bytea")
            let receipts = await pair.both { try $0.erase(customerIDs: [(1, Rows.id(7)), (2, Rows.id(7))], file: nil, reason: "request", audit: officer)
                .map { $0.removed.map { "\($0.0)=\($0.1)" } } }
            expectSame(receipts, "receipts")
            if case .success(let r) = receipts.1 {
                #expect(r.first == ["pii_fields=5", "blind_index_entries=2", "attribute_rows=1", "events=2", "consent_entries=3",
                                    "consent_states=2", "wrapped_data_key=1"])
                #expect(r.last?.allSatisfy { $0.hasSuffix("=0") } == true)
            }
            // Nothing of the subject in any table: no row with its id, no value with its pseudonym.
            let tables = try await TestDatabase.strings(pair.cluster.db, """
                SELECT table_name::text FROM information_schema.columns WHERE table_schema = 'profilevault' AND column_name = 'subject_id'
                """)
            #expect(Set(tables).isSuperset(of: ["pii", "attributes", "events", "consent", "consent_state"]))
            for t in tables {
                #expect(try await pair.cluster.db.count("SELECT count(*) FROM profilevault.\(t) WHERE subject_id = \(sid)") == 0, "\(t)")
            }
            #expect(try await pair.cluster.db.count("SELECT count(*) FROM profilevault.subjects WHERE id = \(sid)") == 0)
            // The other subject's rows are untouched.
            #expect(try await pair.cluster.db.count("SELECT count(*) FROM profilevault.consent") == 3)
            #expect(try await pair.cluster.db.count("SELECT count(*) FROM profilevault.consent_state") == 2)
            expectSame(await pair.both { try $0.consentState(customerID: Rows.id(7)).map { $0.mapValues(\.granted) } }, "state after")
            expectSame(await pair.both { try $0.hasConsent(customerID: Rows.id(7), purpose: "model_training") }, "has after")
            expectSame(await pair.both { try $0.setConsent([(1, Rows.id(7))], file: nil, purpose: "analytics", granted: true, source: nil,
                                                           policyVersion: "p", audit: officer) }, "consent after")
            #expect(try await pair.pg.engine.verifyAudit().ok)
        }
    }

    /// The service role cannot rewrite or empty the consent ledger: no UPDATE or TRUNCATE
    /// privilege (42501); the owner's UPDATE meets the append-only trigger.
    @Test func theConsentLedgerIsAppendOnly() async throws {
        try await EnginePair.with { pair in
            _ = try await onThread { try pair.pg.setConsent([(1, Rows.id(1))], file: nil, purpose: "analytics", granted: true, source: nil,
                                                            policyVersion: "p", audit: officer) }
            let db = pair.cluster.db
            for sql in ["UPDATE profilevault.consent SET granted = false", "TRUNCATE profilevault.consent", "TRUNCATE profilevault.consent_state",
                        "UPDATE profilevault.consent SET time = 0 WHERE false", "DROP TABLE profilevault.consent",
                        "ALTER TABLE profilevault.consent DISABLE TRIGGER consent_no_update"] {
                let e = try await db.attempt(sql, as: db.node, password: db.nodePassword)
                #expect(e?.kind == .denied && e?.sqlState == "42501", "\(sql)")
            }
            let owner = try await db.attempt("UPDATE profilevault.consent SET granted = false", as: db.owner, password: db.ownerPassword)
            #expect(owner?.sqlState == "P0001" && owner?.message.contains("append-only") == true)
            #expect(try await onThread { try pair.pg.hasConsent(customerID: Rows.id(1), purpose: "analytics") })
        }
    }

    /// SQL text in a source and a purpose is stored as data, the same on both engines; U+0000
    /// (which PostgreSQL's text cannot hold, and SQLite stored cut at it) in a written value is
    /// refused alike by both engines (invalid input naming the field, never the value) and
    /// writes nothing, and in a value only compared matches nothing, as on SQLite.
    @Test func sqlTextAndNULValues() async throws {
        try await EnginePair.with { pair in
            let source = "x'); DELETE FROM profilevault.consent; --"
            let purpose = "analytics'; DROP TABLE profilevault.consent_state; --"
            let r = await pair.both { try $0.setConsent([(1, Rows.id(1))], file: nil, purpose: purpose, granted: true, source: source,
                                                        policyVersion: "p", audit: officer) }
            expectSame(r, "sql text")
            expectSame(await pair.both { try $0.consentHistory(customerID: Rows.id(1))?.map(Timeless.init) }, "history")
            #expect(try await onThread { try pair.pg.hasConsent(customerID: Rows.id(1), purpose: purpose) })
            #expect(try await TestDatabase.strings(pair.cluster.db, "SELECT source FROM profilevault.consent") == [source])
            let start = try await pair.auditHeads()
            let nul = "web\u{0}form"
            let refusals: [(String?, String, String, String)] = [(nul, "analytics", "p", "officer"), (nil, "ana\u{0}lytics", "p", "officer"),
                                                                 (nil, "analytics", "p\u{0}", "officer"), (nil, "analytics", "p", "off\u{0}icer")]
            let fields = ["consent source", "purpose", "policy version", "actor"]
            for ((src, purp, version, actor), field) in zip(refusals, fields) {
                let ctx = AuditContext(actor: actor, role: "privacy_officer", requestID: "r")
                let r = await pair.both { try $0.setConsent([(1, Rows.id(2))], file: nil, purpose: purp, granted: true, source: src,
                                                            policyVersion: version, audit: ctx) }
                expectSame(r, field)
                guard case .failure(let e) = r.1 else { Issue.record("a \(field) with U+0000 was accepted"); continue }
                #expect(e.kind == .invalidInput && e.message == "the \(field) contains the control character U+0000", "\(e.message)")
            }
            #expect(try await pair.cluster.db.count("SELECT count(*) FROM profilevault.consent") == 1)
            expectSame(await pair.both { try $0.consentHistory(customerID: Rows.id(2))?.map(Timeless.init) }, "no ledger row")
            #expect(try pair.sqlite.consentHistory(customerID: Rows.id(2))?.isEmpty == true)
            #expect(try await pair.auditHeads() == start)
            // Compared only: as SQLite compares it (up to the U+0000), on both engines.
            _ = await pair.both { try $0.setConsent([(1, Rows.id(1)), (2, Rows.id(0))], file: nil, purpose: "analytics", granted: true, source: nil,
                                                    policyVersion: "p", audit: officer) }
            let all = Set(repositorySchema.fields.map(\.name))
            let p1 = try pair.pg.pseudonym(ofCustomerID: Rows.id(1))
            let nobody = try pair.pg.pseudonym(ofCustomerID: "PGCUST-nobody")
            expectSame(await pair.both { try $0.hasConsent(customerID: Rows.id(1), purpose: "analytics\u{0}") }, "has nul")
            expectSame(await pair.both { try $0.readProfile(pseudonym: p1, fields: all, consentPurpose: "analytics\u{0}") }, "read nul")
            expectSame(await pair.both { try $0.readProfile(pseudonym: nobody, fields: all, consentPurpose: "analytics\u{0}") }, "read nul unknown")
            expectSame(await pair.both { try $0.subjectItems(customerIDs: [Rows.id(0)], kind: "purchase\u{0}", consentPurpose: "a\u{0}", segmentAttribute: nil)
                .map { "\($0.items ?? []) \($0.consent)" } }, "items nul")
        }
    }

    /// U+0000 in an erasure reason or in a policy record's text (which PostgreSQL's text cannot
    /// hold and SQLite stored cut at it) is refused by both engines before anything is written:
    /// no subject erased, no ledger row, no audit entry; the message names the field, never the
    /// value. (On the old code SQLite erased the subject and recorded "request" as the reason.)
    @Test func nulInErasureReasonAndPolicyTextIsRefusedAlike() async throws {
        try await EnginePair.with { pair in
            let start = try await pair.auditHeads()
            let r = await pair.both { try $0.erase(customerIDs: [(1, Rows.id(3))], file: nil, reason: "request\u{0}secret", audit: officer).count }
            guard case .failure(let s) = r.0, case .failure(let p) = r.1 else {
                Issue.record("a reason with U+0000 was accepted: \(r)")
                return
            }
            #expect(s.kind == .invalidInput && s.message == "the erasure reason contains the control character U+0000", "\(s.message)")
            #expect(p.message == s.message && !p.message.contains("secret"), "\(p.message)")
            #expect(p.kind == .invalidInput)
            expectSame(await pair.both { try $0.exists(customerID: Rows.id(3)) }, "not erased")
            #expect(try pair.sqlite.exists(customerID: Rows.id(3)))
            #expect(try await pair.auditHeads() == start)

            let history = await pair.both { try $0.policyHistory() }
            let audit = context.record("policy.apply", .update, detail: "policy")
            let texts: [(String, PolicyRecord)] = [
                ("policy version", PolicyRecord(sequence: 0, version: "2026\u{0}x", sha256: String(repeating: "a", count: 64), schemaSHA256: String(repeating: "5", count: 64),
                                                appliedAtMillis: 0, actor: "admin", role: "admin", summary: "{}", changes: "[]")),
                ("actor", PolicyRecord(sequence: 0, version: "1", sha256: String(repeating: "a", count: 64), schemaSHA256: String(repeating: "5", count: 64),
                                       appliedAtMillis: 0, actor: "ad\u{0}min", role: "admin", summary: "{}", changes: "[]")),
                ("policy summary", PolicyRecord(sequence: 0, version: "1", sha256: String(repeating: "a", count: 64), schemaSHA256: String(repeating: "5", count: 64),
                                                appliedAtMillis: 0, actor: "admin", role: "admin", summary: "{\"v\":\"\u{0}\"}", changes: "[]")),
            ]
            for (field, record) in texts {
                let latest = try pair.sqlite.latestPolicy()?.sequence
                let r = await pair.both { try $0.recordPolicy(record, previous: latest, periods: [:], audit: audit).sequence }
                expectSame(r, field)
                guard case .failure(let e) = r.0 else { Issue.record("a \(field) with U+0000 was accepted"); continue }
                #expect(e.kind == .invalidInput && e.message == "the \(field) contains the control character U+0000", "\(e.message)")
            }
            let after = await pair.both { try $0.policyHistory() }
            #expect(after.0 == history.0 && after.1 == history.1)
            #expect(try await pair.auditHeads() == start)
        }
    }

    /// Two nodes change consent for the same subjects at once: the state each transaction
    /// leaves is the one the ledger's last entry says, and no change is recorded twice.
    @Test func twoNodesChangingConsentAtOnce() async throws {
        try await EnginePair.with { pair in
            let other = try await pair.cluster.node()
            let ids = (0..<20).map { ($0 + 1, Rows.id($0)) }
            let a = pair.pg
            async let x = onThread { try (0..<6).reduce(0) { n, i in n + (try a.setConsent(ids, file: nil, purpose: "analytics", granted: i % 2 == 0, source: "a", policyVersion: "p", audit: officer)) } }
            async let y = onThread { try (0..<6).reduce(0) { n, i in n + (try other.setConsent(ids, file: nil, purpose: "analytics", granted: i % 2 == 0, source: "b", policyVersion: "p", audit: officer)) } }
            let changes = try await x + y
            // Every change is a ledger row, and a subject's ledger alternates grant and revoke.
            #expect(try await pair.cluster.db.count("SELECT count(*) FROM profilevault.consent") == Int64(changes))
            for i in 0..<20 {
                let h = try #require(try await onThread { try a.consentHistory(customerID: Rows.id(i)) })
                #expect(zip(h, h.dropFirst()).allSatisfy { $0.granted != $1.granted } && h.first?.granted == true)
                let state = try await onThread { try a.consentState(customerID: Rows.id(i)) }
                #expect(state?["analytics"]?.granted == h.last?.granted)
            }
            #expect(try await a.engine.verifyAudit().ok)
            await other.engine.close()
        }
    }
}
