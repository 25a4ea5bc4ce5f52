// pvbench: measurement modes for bench/*.sh. Each mode runs in its own process so peak RSS
// (getrusage ru_maxrss) belongs to that mode alone. Output: one JSON object on stdout.
import Foundation
import DifferentialPrivacy
import GRDB
import Logging
@_spi(Benchmark) import ProfileVault
import VaultPolicy
import VaultValues
#if canImport(Glibc)
import Glibc
#endif

func peakRSSKiB() -> Int {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    return Int(usage.ru_maxrss)
}

func emit(_ pairs: [(String, JSONValue)]) {
    print(JSONValue.object(pairs + [("peak_rss_mib", .double(Double(peakRSSKiB()) / 1024))]).rendered(pretty: false))
}

func usage() -> Never {
    FileHandle.standardError.write(Data("""
        usage: pvbench gen N PROFILES.csv [EVENTS.csv]
               pvbench plain PROFILES.csv DB POLICYDIR      # plaintext SQLite baseline, same rows and batches
               pvbench vault PROFILES.csv DB POLICYDIR KEYRING
               pvbench seal BYTES SECONDS                   # AES-256-GCM seal ops/s, one thread
               pvbench audit N POLICYDIR KEYRING            # audit append / export / verify rates
               pvbench append STORE POLICYDIR KEYRING SECONDS THREADS  # one-entry audit appends/s on an existing store
               pvbench gets STORE POLICYDIR KEYRING IDS N   # audited get latency, one at a time, on an existing store
               pvbench get PROFILES.csv POLICYDIR KEYRING N # latency an audited get adds
               pvbench erase PROFILES.csv POLICYDIR KEYRING N
               pvbench rotate PROFILES.csv POLICYDIR KEYRING
               pvbench noise N                              # discrete Laplace samples/s
               pvbench suite PROFILES.csv POLICYDIR KEYRING WORKDIR  # get, query, rotate, erase on one store
               pvbench query PROFILES.csv POLICYDIR KEYRING [REPS]   # DP queries vs raw SQL
               pvbench custody STORE POLICYDIR KEYRING SEALED HSM-URI REPS  # open the store: file keyring vs sealed by the HSM
               pvbench zcdp-regression BANK.csv [RUNS]      # logistic regression AUC: Gaussian (zCDP) vs Laplace at equal (epsilon, delta)

        """.utf8))
    exit(64)
}

LoggingSystem.bootstrap { label in
    var h = StreamLogHandler.standardError(label: label)
    h.logLevel = .warning
    return h
}

let args = Array(CommandLine.arguments.dropFirst())
guard let mode = args.first else { usage() }

switch mode {
case "gen":
    guard args.count >= 3, let n = Int(args[1]) else { usage() }
    let t0 = Date()
    let events = try DemoPopulation(count: n).writeCSV(profilesPath: args[2], eventsPath: args.count > 3 ? args[3] : nil, force: true)
    emit([("profiles", .int(Int64(n))), ("events", .int(Int64(events))), ("seconds", .double(Date().timeIntervalSince(t0)))])

case "plain":
    guard args.count >= 4 else { usage() }
    let (schema, _) = try PolicyLoader.load(directory: args[3])
    let t0 = Date()
    let n = try PlainBaseline.ingest(csv: args[1], db: args[2], schema: schema, batchSize: IngestOptions.defaultBatchSize)
    let s = Date().timeIntervalSince(t0)
    emit([("mode", .string("plain")), ("profiles", .int(Int64(n))), ("seconds", .double(s)), ("rate", .double(Double(n) / s))])

case "vault":
    guard args.count >= 5 else { usage() }
    let config = VaultConfiguration(storePath: args[2], keysPath: args[4], policyDirectory: args[3], actor: Actor(name: "bench", role: "operator"))
    try? FileManager.default.removeItem(atPath: args[2])
    let vault = try Vault.initialize(config)
    var opts = IngestOptions()
    opts.format = .csv
    let r = try vault.ingestProfiles(path: args[1], options: opts)
    let n = r.inserted + r.updated
    emit([("mode", .string("vault")), ("profiles", .int(Int64(n))), ("seconds", .double(r.seconds)), ("rate", .double(Double(n) / r.seconds))])

case "seal":
    guard args.count >= 3, let bytes = Int(args[1]), let secs = Double(args[2]) else { usage() }
    let ops = CryptoBenchmark.sealThroughput(bytes: bytes, seconds: secs)
    emit([("mode", .string("seal")), ("bytes", .int(Int64(bytes))), ("ops_per_second", .double(ops))])

case "audit":
    // pvbench audit N POLICYDIR KEYRING: append N entries in batches of 1,000 (one transaction
    // and one signed checkpoint per batch), export them, verify the export and the store.
    guard args.count >= 4, let n = Int(args[1]) else { usage() }
    let dir = NSTemporaryDirectory() + "pvbench-audit-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let vault = try Vault.initialize(VaultConfiguration(storePath: dir + "/s.sqlite", keysPath: args[3], policyDirectory: args[2], actor: Actor(name: "bench", role: "auditor")))
    var t0 = Date()
    try vault.benchmarkAppendAudit(count: n, batch: 1000)
    let append = Date().timeIntervalSince(t0)
    t0 = Date()
    try vault.benchmarkExportAudit(to: dir + "/a.jsonl")
    let export = Date().timeIntervalSince(t0)
    t0 = Date()
    let v = try vault.benchmarkVerifyExport(path: dir + "/a.jsonl")
    let verifyFile = Date().timeIntervalSince(t0)
    t0 = Date()
    let vs = try vault.benchmarkVerifyStore()
    let verifyStore = Date().timeIntervalSince(t0)
    guard v.ok, vs.ok else { fatalError("verification failed") }
    emit([("mode", .string("audit")), ("entries", .int(Int64(n))), ("append_per_s", .double(Double(n) / append)),
          ("export_per_s", .double(Double(n) / export)), ("verify_file_per_s", .double(Double(n) / verifyFile)),
          ("verify_store_per_s", .double(Double(n) / verifyStore))])

case "append":
    // pvbench append STORE POLICYDIR KEYRING SECONDS THREADS: audit entries appended one per
    // transaction (as each audited read does) by THREADS threads at once for SECONDS on an
    // existing store (a file or postgres://): every append takes the chain's head, so this is
    // the ceiling the head puts on audited operations per second.
    guard args.count >= 6, let secs = Double(args[4]), let threads = Int(args[5]), threads >= 1, secs > 0 else { usage() }
    let vault = try Vault.open(VaultConfiguration(storePath: args[1], keysPath: args[3], policyDirectory: args[2], actor: Actor(name: "bench", role: "auditor")))
    let stop = Date().addingTimeInterval(secs)
    let total = AppendCount()
    let workers = (0..<threads).map { _ in
        WorkerThread {
            var n = 0
            while Date() < stop {
                do { try vault.benchmarkAppendAudit(count: 1, batch: 1) } catch { total.fail("\(error)"); return }
                n += 1
            }
            total.add(n)
        }
    }
    workers.forEach { $0.join() }
    if let failure = total.failure { fatalError("append failed: \(failure)") }
    emit([("mode", .string("append")), ("threads", .int(Int64(threads))), ("seconds", .double(secs)),
          ("entries", .int(Int64(total.count))), ("append_per_s", .double(Double(total.count) / secs))])
    try vault.close()

case "gets":
    // pvbench gets STORE POLICYDIR KEYRING IDS N: N audited `Vault.get` calls one at a time
    // (gate, the subject's row, DEK unwrap, field decryption, audit entry committed and signed)
    // for customer IDs drawn from the file IDS (one a line) with a fixed seed; latency
    // percentiles. The first 50 calls warm the connection pool and are not counted.
    guard args.count >= 6, let n = Int(args[5]), n >= 1 else { usage() }
    let vault = try Vault.open(VaultConfiguration(storePath: args[1], keysPath: args[3], policyDirectory: args[2], actor: Actor(name: "bench", role: "support")))
    let ids = try String(contentsOfFile: args[4], encoding: .utf8).split(separator: "\n").map(String.init)
    guard !ids.isEmpty else { usage() }
    var rng = SplitMix64(seed: 18)
    var lat: [Double] = []
    lat.reserveCapacity(n)
    for i in 0..<(n + 50) {
        let id = ids[Int(rng.next() % UInt64(ids.count))]
        let t0 = DispatchTime.now().uptimeNanoseconds
        _ = try vault.get(customerID: id, purpose: "customer_support")
        if i >= 50 { lat.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6) }
    }
    lat.sort()
    emit([("mode", .string("gets")), ("calls", .int(Int64(n))), ("p50_ms", .double(lat[n / 2])), ("p99_ms", .double(lat[min(n - 1, n * 99 / 100)])),
          ("max_ms", .double(lat[n - 1]))])
    try vault.close()

case "custody":
    // pvbench custody STORE POLICYDIR KEYRING SEALED HSM-URI REPS: start-up (Vault.open, one
    // audited get, close) with the file keyring and with the same keys sealed by a PKCS#11 key,
    // alternating, REPS each, in one process; the difference of the medians is the unseal.
    guard args.count >= 7, let reps = Int(args[6]), reps > 0 else { usage() }
    func config(_ keys: String, _ hsm: String?) -> VaultConfiguration {
        var c = VaultConfiguration(storePath: args[1], keysPath: keys, policyDirectory: args[2], actor: Actor(name: "bench", role: "support"))
        c.hsmURI = hsm
        return c
    }
    var fileOpen: [Double] = [], hsmOpen: [Double] = [], fileGet: [Double] = [], hsmGet: [Double] = []
    let subjects = try Vault.open(config(args[3], nil)).status().subjects
    for i in 0..<(reps + 2) {
        for (keys, hsm) in [(args[3], nil), (args[4], args[5])] as [(String, String?)] {
            let t0 = DispatchTime.now().uptimeNanoseconds
            let vault = try Vault.open(config(keys, hsm))
            let t1 = DispatchTime.now().uptimeNanoseconds
            _ = try vault.get(customerID: DemoPopulation.customerID((i * 7919) % max(subjects, 1)), purpose: "customer_support")
            let t2 = DispatchTime.now().uptimeNanoseconds
            try vault.close()
            guard i >= 2 else { continue }   // two warm-up rounds (page cache, module load)
            if hsm == nil { fileOpen.append(Double(t1 - t0) / 1e6); fileGet.append(Double(t2 - t1) / 1e6) } else { hsmOpen.append(Double(t1 - t0) / 1e6); hsmGet.append(Double(t2 - t1) / 1e6) }
        }
    }
    func median(_ a: [Double]) -> Double { let s = a.sorted(); return s[s.count / 2] }
    emit([("mode", .string("custody")), ("subjects", .int(Int64(subjects))), ("reps", .int(Int64(reps))),
          ("file_open_ms", .double(median(fileOpen))), ("hsm_open_ms", .double(median(hsmOpen))),
          ("unseal_ms", .double(median(hsmOpen) - median(fileOpen))), ("hsm_open_max_ms", .double(hsmOpen.max() ?? 0)),
          ("file_first_get_ms", .double(median(fileGet))), ("hsm_first_get_ms", .double(median(hsmGet)))])

case "get":
    // pvbench get PROFILES.csv POLICYDIR KEYRING N: mean latency of an audited Vault.get
    // (gate + decrypt + audit entry in its own transaction) vs the bare decrypting read.
    guard args.count >= 5, let n = Int(args[4]) else { usage() }
    let dir = NSTemporaryDirectory() + "pvbench-get-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let config = VaultConfiguration(storePath: dir + "/s.sqlite", keysPath: args[3], policyDirectory: args[2], actor: Actor(name: "bench", role: "support"))
    let vault = try Vault.initialize(config)
    var o = IngestOptions()
    o.format = .csv
    _ = try vault.benchmarkIngestProfiles(path: args[1], options: o)
    let count = try vault.status().subjects
    let fields = Set(vault.schema.fields.filter { $0.pii }.map(\.name))
    var t0 = Date()
    for i in 0..<n { _ = try vault.benchmarkBareRead(customerID: DemoPopulation.customerID(i % count), fields: fields) }
    let bare = Date().timeIntervalSince(t0) / Double(n)
    t0 = Date()
    for i in 0..<n { _ = try vault.get(customerID: DemoPopulation.customerID(i % count), purpose: "customer_support") }
    let audited = Date().timeIntervalSince(t0) / Double(n)
    emit([("mode", .string("get")), ("calls", .int(Int64(n))), ("bare_ms", .double(bare * 1000)), ("audited_ms", .double(audited * 1000)),
          ("added_ms", .double((audited - bare) * 1000))])

case "erase", "rotate":
    // pvbench erase PROFILES.csv POLICYDIR KEYRING N: bulk erasure of N subjects (batches of
    //   500, WAL checkpoint per batch) -> subjects/s.
    // pvbench rotate PROFILES.csv POLICYDIR KEYRING: keys rotate over every subject -> DEKs/s.
    guard args.count >= 4 else { usage() }
    let dir = NSTemporaryDirectory() + "pvbench-\(mode)-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let keyring = dir + "/keyring.json"
    try FileManager.default.copyItem(atPath: args[3], toPath: keyring)
    chmod(keyring, 0o600)
    let config = VaultConfiguration(storePath: dir + "/s.sqlite", keysPath: keyring, policyDirectory: args[2], actor: Actor(name: "bench", role: "privacy_officer"))
    let vault = try Vault.initialize(config)
    var o = IngestOptions()
    o.format = .csv
    let t0 = Date()
    let ingested = try vault.benchmarkIngestProfiles(path: args[1], options: o)
    let ingestSeconds = Date().timeIntervalSince(t0)
    if mode == "erase" {
        guard args.count >= 5, let n = Int(args[4]) else { usage() }
        let list = dir + "/ids.txt"
        try (0..<n).map { DemoPopulation.customerID($0 * max(1, ingested.inserted / n)) }.joined(separator: "\n").write(toFile: list, atomically: true, encoding: .utf8)
        let t1 = Date()
        let receipts = try vault.erase(.file(list), reason: "bench")
        let s = Date().timeIntervalSince(t1)
        emit([("mode", .string("erase")), ("store_subjects", .int(Int64(ingested.inserted))), ("erased", .int(Int64(receipts.count))),
              ("seconds", .double(s)), ("subjects_per_s", .double(Double(receipts.count) / s))])
    } else {
        let t1 = Date()
        let r = try vault.rotateKeys(resume: false)
        let s = Date().timeIntervalSince(t1)
        emit([("mode", .string("rotate")), ("subjects", .int(Int64(ingested.inserted))), ("ingest_seconds", .double(ingestSeconds)),
              ("rewrapped", .int(Int64(r.rewrapped))), ("seconds", .double(s)), ("deks_per_s", .double(Double(r.rewrapped) / s))])
    }

case "suite":
    // pvbench suite PROFILES.csv POLICYDIR KEYRING OUTDIR: one store of every profile, then on
    // it: audited get latency (p50/p99), DP queries against raw SQL, key rotation (DEKs/s) and
    // bulk erasure (subjects/s). Ingest timing and RSS are measured by `vault` on their own.
    guard args.count >= 5 else { usage() }
    let dir = args[4]
    try? FileManager.default.removeItem(atPath: dir)
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let keyring = dir + "/keyring.json"
    try FileManager.default.copyItem(atPath: args[3], toPath: keyring)
    chmod(keyring, 0o600)
    func config(_ role: String) -> VaultConfiguration {
        VaultConfiguration(storePath: dir + "/s.sqlite", keysPath: keyring, policyDirectory: args[2], actor: Actor(name: "bench", role: role))
    }
    let officer = try Vault.initialize(config("privacy_officer"))
    var o = IngestOptions()
    o.format = .csv
    let n = try officer.benchmarkIngestProfiles(path: args[1], options: o).inserted
    var out: [(String, JSONValue)] = [("mode", .string("suite")), ("subjects", .int(Int64(n)))]

    // get: in-process latency through the Vault layer (gate + decrypt + audit entry committed).
    let support = try Vault.open(config("support"))
    var lat: [Double] = []
    var gen = SplitMix64(seed: 5)
    for _ in 0..<3000 {
        let id = DemoPopulation.customerID(Int(gen.next() % UInt64(n)))
        let t = Date()
        _ = try support.get(customerID: id, purpose: "customer_support")
        lat.append(Date().timeIntervalSince(t) * 1000)
    }
    lat.sort()
    out.append(("get", .object([("calls", .int(Int64(lat.count))), ("p50_ms", .double(lat[lat.count / 2])), ("p99_ms", .double(lat[lat.count * 99 / 100]))])))

    // DP queries against the same aggregate as plain SQL, every subject consenting.
    let ids = dir + "/ids.txt"
    try (0..<n).map { DemoPopulation.customerID($0) }.joined(separator: "\n").write(toFile: ids, atomically: true, encoding: .utf8)
    _ = try officer.setConsent(.file(ids), purpose: "model_training", granted: true, source: "bench")
    let trainer = try Vault.open(config("trainer"))
    let raw = try DatabasePool(path: dir + "/s.sqlite")
    func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }
    let consent = "FROM attributes a JOIN consent_state cs ON cs.subject_id = a.subject_id AND cs.purpose = 'model_training' AND cs.granted = 1"
    let cases: [(String, Vault.QueryRequest, String)] = [
        ("count_where", .init(kind: .count, purpose: "model_training", epsilon: 0.01, whereClause: "country=DE,age>=30"),
         "SELECT COUNT(*) \(consent) WHERE a.\"country\" = 'DE' AND a.\"age\" >= 30"),
        ("sum", .init(kind: .sum, purpose: "model_training", epsilon: 0.01, attribute: "annual_income"),
         "SELECT SUM(a.\"annual_income\") \(consent)"),
        ("grouped_mean", .init(kind: .mean, purpose: "model_training", epsilon: 0.01, attribute: "age", groupBy: "country"),
         "SELECT a.\"country\", AVG(a.\"age\") \(consent) GROUP BY a.\"country\""),
    ]
    var q: [(String, JSONValue)] = []
    for (name, cached, sql) in cases {
        // Every run a new release (the release cache would answer repeats without reading data).
        var request = cached
        request.fresh = true
        var sqlMs: [Double] = [], dpMs: [Double] = []
        for _ in 0..<5 {   // interleaved, so both see the same machine
            var t = Date(); _ = try raw.read { db in try Row.fetchAll(db, sql: sql) }; sqlMs.append(Date().timeIntervalSince(t) * 1000)
            t = Date(); _ = try trainer.query(request); dpMs.append(Date().timeIntervalSince(t) * 1000)
        }
        q.append((name, .object([("dp_ms", .double(median(dpMs))), ("raw_sql_ms", .double(median(sqlMs))), ("ratio", .double(median(dpMs) / median(sqlMs)))])))
    }
    try raw.close()
    out.append(("query", .object(q)))

    // Key rotation: every DEK re-wrapped.
    var t = Date()
    let rotated = try officer.rotateKeys(resume: false)
    let rotateSeconds = Date().timeIntervalSince(t)
    out.append(("rotate", .object([("rewrapped", .int(Int64(rotated.rewrapped))), ("seconds", .double(rotateSeconds)),
                                   ("deks_per_s", .double(Double(rotated.rewrapped) / rotateSeconds))])))

    // Bulk erasure of 2,000 subjects spread over the store (batches of 500, WAL checkpoint each).
    let eraseCount = min(2000, n / 2)
    let eraseList = dir + "/erase.txt"
    try (0..<eraseCount).map { DemoPopulation.customerID($0 * (n / eraseCount)) }.joined(separator: "\n").write(toFile: eraseList, atomically: true, encoding: .utf8)
    t = Date()
    let erased = try officer.erase(.file(eraseList), reason: "bench").count
    let eraseSeconds = Date().timeIntervalSince(t)
    out.append(("erase", .object([("erased", .int(Int64(erased))), ("seconds", .double(eraseSeconds)), ("subjects_per_s", .double(Double(erased) / eraseSeconds))])))
    try? FileManager.default.removeItem(atPath: dir)
    emit(out)

case "noise":
    // pvbench noise N: discrete Laplace samples per second (scale 2^10 / 0.5, CSPRNG).
    guard args.count >= 2, let n = Int(args[1]) else { usage() }
    var rng = CSPRNGWords()
    let t0 = Date()
    var acc: Int64 = 0
    for _ in 0..<n { acc &+= DiscreteLaplace().sample(scaleNumerator: 1 << 30, scaleDenominator: 1 << 19, using: &rng) }
    let s = Date().timeIntervalSince(t0)
    emit([("mode", .string("noise")), ("samples", .int(Int64(n))), ("samples_per_s", .double(Double(n) / s)), ("checksum", .int(acc & 1))])

case "query":
    // pvbench query PROFILES.csv POLICYDIR KEYRING [REPS]: a DP count with --where, a DP sum and
    // a DP grouped mean over every subject (all consenting), each against the same aggregate
    // as plain SQL on the same file (same joins and filters, no clamping, no noise, no budget).
    guard args.count >= 4 else { usage() }
    let reps = args.count > 4 ? Int(args[4]) ?? 5 : 5
    let dir = NSTemporaryDirectory() + "pvbench-query-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    func config(_ role: String) -> VaultConfiguration {
        VaultConfiguration(storePath: dir + "/s.sqlite", keysPath: args[3], policyDirectory: args[2], actor: Actor(name: "bench", role: role))
    }
    let vault = try Vault.initialize(config("privacy_officer"))
    var o = IngestOptions()
    o.format = .csv
    let ingested = try vault.benchmarkIngestProfiles(path: args[1], options: o)
    let ids = dir + "/ids.txt"
    try (0..<ingested.inserted).map { DemoPopulation.customerID($0) }.joined(separator: "\n").write(toFile: ids, atomically: true, encoding: .utf8)
    _ = try vault.setConsent(.file(ids), purpose: "model_training", granted: true, source: "bench")
    let trainer = try Vault.open(config("trainer"))
    let raw = try DatabasePool(path: dir + "/s.sqlite")
    func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }
    func time(_ body: () throws -> Void) rethrows -> Double {
        var xs: [Double] = []
        for _ in 0..<reps { let t = Date(); try body(); xs.append(Date().timeIntervalSince(t) * 1000) }
        return median(xs)
    }
    let consent = "FROM attributes a JOIN consent_state cs ON cs.subject_id = a.subject_id AND cs.purpose = 'model_training' AND cs.granted = 1"
    let cases: [(String, Vault.QueryRequest, String)] = [
        ("count_where", .init(kind: .count, purpose: "model_training", epsilon: 0.01, whereClause: "country=DE,age>=30"),
         "SELECT COUNT(*) \(consent) WHERE a.\"country\" = 'DE' AND a.\"age\" >= 30"),
        ("sum", .init(kind: .sum, purpose: "model_training", epsilon: 0.01, attribute: "annual_income"),
         "SELECT SUM(a.\"annual_income\") \(consent)"),
        ("grouped_mean", .init(kind: .mean, purpose: "model_training", epsilon: 0.01, attribute: "age", groupBy: "country"),
         "SELECT a.\"country\", AVG(a.\"age\") \(consent) GROUP BY a.\"country\""),
    ]
    var out: [(String, JSONValue)] = [("mode", .string("query")), ("subjects", .int(Int64(ingested.inserted))), ("reps", .int(Int64(reps)))]
    for (name, cached, sql) in cases {
        // Every run a new release (the release cache would answer repeats without reading data).
        var request = cached
        request.fresh = true
        let sqlMs = try time { _ = try raw.read { db in try Row.fetchAll(db, sql: sql) } }
        let dpMs = try time { _ = try trainer.query(request) }
        out.append((name, .object([("dp_ms", .double(dpMs)), ("raw_sql_ms", .double(sqlMs)), ("ratio", .double(dpMs / sqlMs))])))
    }
    emit(out)

case "zcdp-regression":
    guard args.count >= 2 else { usage() }
    emit(try zcdpRegressionBench(path: args[1], runs: args.count > 2 ? Int(args[2]) ?? 20 : 20))

default:
    usage()
}

/// The baseline: the same CSV, parsed and validated by the same code, inserted into the same
/// table shapes in the same batch size, but as plaintext with no crypto at all (customer ID as
/// the key, PII as text, lookup values as plain normalised text).
enum PlainBaseline {
    static func ingest(csv: String, db path: String, schema: Schema, batchSize: Int) throws -> Int {
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        var config = Configuration()
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA secure_delete = ON")
            try db.execute(sql: "PRAGMA synchronous = FULL")
            try db.execute(sql: "PRAGMA cache_size = -65536")
        }
        let pool = try DatabasePool(path: path, configuration: config)
        let attrs = schema.attributeFields
        // Columns: c0 (customer ID), c<id> per PII field (ids 1, 2, ... in schema order), m<id> per lookup field.
        var piiID: [Int: Int] = [:]
        for (i, f) in schema.fields.enumerated() where f.pii { piiID[i] = piiID.count + 1 }
        let lookups = schema.fields.indices.filter { schema.fields[$0].pii && schema.fields[$0].lookup }
        let piiColumns = ["c0"] + (0..<piiID.count).map { "c\($0 + 1)" } + lookups.map { "m\(piiID[$0]!)" }
        let macSlot = Dictionary(uniqueKeysWithValues: lookups.enumerated().map { ($1, 1 + piiID.count + $0) })
        try pool.write { db in
            try db.execute(sql: """
                CREATE TABLE subjects(id INTEGER PRIMARY KEY, customer_id TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL, last_activity INTEGER NOT NULL);
                """)
            // The store's layout (format 3) with plaintext: one pii row per subject, a column per
            // PII field, the normalised lookup values beside them, each indexed.
            try db.execute(sql: "CREATE TABLE pii(subject_id INTEGER PRIMARY KEY, " + piiColumns.map { "\($0) TEXT" }.joined(separator: ", ") + ")")
            for m in piiColumns where m.hasPrefix("m") { try db.execute(sql: "CREATE INDEX pii_\(m) ON pii(\(m)) WHERE \(m) IS NOT NULL") }
            try db.execute(sql: "CREATE TABLE attributes(subject_id INTEGER PRIMARY KEY" + attrs.map { ", \"\($0.name)\"" }.joined() + ")")
        }
        let reader = try CSVReader(path: csv)
        guard let header = try reader.next() else { return 0 }
        var index: [String: Int] = [:]
        for (i, h) in header.fields.enumerated() { index[h] = i }
        let idCol = index[schema.subjectIDField]!
        let cols = schema.fields.map { index[$0.name]! }
        let attrSQL = "INSERT OR REPLACE INTO attributes VALUES (?" + String(repeating: ", ?", count: attrs.count) + ")"
        var total = 0
        var batch: [(String, [FieldValue])] = []
        func flush() throws {
            let now = Int64(Date().timeIntervalSince1970)
            try pool.write { db in
                // The same raw binding as the store's ingest, so the baseline is not slowed by
                // GRDB's argument boxing: the ratio measures crypto and format, nothing else.
                let find = RawStatement(try db.cachedStatement(sql: "SELECT id FROM subjects WHERE customer_id = ?"), db)
                let ins = RawStatement(try db.cachedStatement(sql: "INSERT INTO subjects(customer_id, created_at, updated_at, last_activity) VALUES (?, ?, ?, ?) ON CONFLICT(customer_id) DO NOTHING"), db)
                let pii = RawStatement(try db.cachedStatement(sql: "INSERT OR REPLACE INTO pii VALUES (?" + String(repeating: ", ?", count: piiColumns.count) + ")"), db)
                let at = RawStatement(try db.cachedStatement(sql: attrSQL), db)
                for (cid, values) in batch {
                    let id: Int64
                    ins.bind(1, text: cid); ins.bind(2, now); ins.bind(3, now); ins.bind(4, now)
                    try ins.step()
                    if ins.changes == 0 {
                        find.bind(1, text: cid)
                        id = try find.step() ?? 0
                    } else {
                        id = db.lastInsertedRowID
                    }
                    pii.bind(1, id); pii.bind(2, text: cid)
                    for k in 1..<piiColumns.count { pii.bindNull(Int32(k + 2)) }
                    var a: Int32 = 2
                    for (i, f) in schema.fields.enumerated() {
                        let v = values[i]
                        if f.pii {
                            if v == .null { continue }
                            let text: String
                            switch v { case .text(let s): text = s; case .date(let d): text = DateParsing.isoDate(days: d); default: text = "\(v)" }
                            pii.bind(Int32(piiID[i]! + 2), text: text)
                            if let m = macSlot[i] { pii.bind(Int32(m + 2), text: Normalization.lookupValue(text, for: f)) }
                        } else {
                            at.bind(a, v)
                            a += 1
                        }
                    }
                    try pii.step()
                    at.bind(1, id)
                    try at.step()
                }
            }
            total += batch.count
            batch.removeAll(keepingCapacity: true)
        }
        while let rec = try reader.next() {
            var values: [FieldValue] = []
            for (i, f) in schema.fields.enumerated() { values.append(try f.parse(Substring(rec.fields[cols[i]]))) }
            batch.append((Normalization.customerID(rec.fields[idCol]), values))
            if batch.count >= batchSize { try flush() }
        }
        try flush()
        return total
    }
}

/// Appends counted across the `append` mode's threads. `@unchecked Sendable`: under `lock`.
final class AppendCount: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    private var error: String?
    func add(_ k: Int) { lock.withLock { n += k } }
    func fail(_ e: String) { lock.withLock { if error == nil { error = e } } }
    var count: Int { lock.withLock { n } }
    var failure: String? { lock.withLock { error } }
}

/// A thread that runs `body` once; `join` waits for it.
final class WorkerThread: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    init(_ body: @escaping @Sendable () -> Void) {
        let done = self.done
        Thread { body(); done.signal() }.start()
    }
    func join() { done.wait() }
}

