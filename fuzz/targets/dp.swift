// libFuzzer target: the DP query planner and release path (Sources/DifferentialPrivacy) and the
// training-job parser (the job-file part of Sources/ProfileVault/Vault+Train.swift) with the
// models' dry run (Sources/PrivateModels). fuzz/run.sh compiles them into one module with
// Sources/VaultCrypto, Sources/VaultPolicy (Yams linked from .build-rel),
// Sources/VaultStore/VaultError.swift and fuzz/shims/dp-vault.swift.
//
// The first input byte picks the mode: even = the rest is a job file (UTF-8 YAML), odd = the
// rest is read as numbers for the planner. Numbers come from the whole Double range: a byte
// below 0x80 picks one of `specials` (subnormals, 2^-20 and 2^-19 and their neighbours, -0,
// 1e300, 2^53, infinities, NaN, ...), a byte from 0x80 up takes the next 8 bytes as a bit
// pattern.
//
// Properties: no crash or hang;
// - planner: a query plans or throws DPParameterError; a planned query has every coordinate
//   bound <= BoundedSum.maxBound, every share >= 1 unit and the shares within the query's
//   epsilon; run on any exact sums (Int64.min ... Int64.max) it releases no NaN and reports
//   the charged epsilon; Epsilon(x) exists exactly for 2^-20 <= x <= 10^6; selection
//   thresholds, half widths, grids, bounds and the sampler never trap;
// - jobs: a job parses or throws VaultError (invalid input or not found); a parsed job has an
//   epsilon the DP layer accepts, every parameter in its model's range and derived bounds the
//   DP layer accepts; the model's dry run (no data, nothing sampled) ends or throws
//   ModelError, SessionError or DPParameterError.
import Foundation

let specials: [Double] = [0, -0.0, 5e-324, 1e-323, 2.2250738585072014e-308, 1e-300, 0x1p-20, (0x1p-20).nextDown, (0x1p-20).nextUp,
                          0x1p-20 * (1 + 0x1p-10), 0x1p-19, (0x1p-19).nextDown, (0x1p-19).nextUp, 1e-6, 1.5e-6, 0.3, 0.5, 1, 2, 3, 10,
                          100, 131_071, 131_072, 1e6, (1e6).nextUp, 1e9, 1e13, 0x1p53, (0x1p53).nextUp, 1e15, 1e19, 1e300,
                          .greatestFiniteMagnitude, .infinity, -.infinity, .nan, -1, -1e300, 0.05, 0.025, 1e-9, 0.9, 64, 65]

struct Reader {
    var bytes: [UInt8]
    var pos = 0
    mutating func byte() -> UInt8 {
        guard pos < bytes.count else { return 0 }
        defer { pos += 1 }
        return bytes[pos]
    }
    mutating func word() -> UInt64 {
        var w: UInt64 = 0
        for _ in 0..<8 { w = w << 8 | UInt64(byte()) }
        return w
    }
    mutating func double() -> Double {
        let b = byte()
        if b < 0x80 {
            let x = specials[Int(b & 0x3F) % specials.count]
            return b & 0x40 != 0 ? -x : x
        }
        return Double(bitPattern: word())
    }
    mutating func int() -> Int {
        let b = byte()
        switch b % 8 {
        case 0: return 0
        case 1: return 1
        case 2: return -1
        case 3: return 10_000
        case 4: return 10_001
        case 5: return Int.max
        case 6: return Int.min
        default: return Int(truncatingIfNeeded: word())
        }
    }
    mutating func int64() -> Int64 {
        switch byte() % 4 {
        case 0: return .max
        case 1: return .min
        case 2: return Int64(byte()) - 128
        default: return Int64(bitPattern: word())
        }
    }
}

/// A source that returns the given exact sums for every key it is asked about.
struct FixedSource: AggregateSource {
    var sums: [Int64]
    func boundedSums(_ request: AggregateRequest) throws -> [String: [Int64]] {
        let row = request.coordinates.indices.map { sums.isEmpty ? 0 : sums[$0 % sums.count] }
        var out: [String: [Int64]] = [:]
        for key in (request.grouping?.domain ?? [""]).prefix(64) { out[key] = row }
        return out
    }
}

struct Granting: BudgetAccountant {
    func spend(purpose: String, epsilon: Epsilon, limit: Double, periodSeconds: Int) throws -> BudgetState {
        BudgetState(purpose: purpose, limit: limit, spent: epsilon.chargedValue, periodStart: 0)
    }
}

func planner(_ r: inout Reader) {
    let kind = QueryKind.allCases[Int(r.byte()) % QueryKind.allCases.count]
    let lo = r.double(), hi = r.double()
    let integral = r.byte() % 2 == 0
    let measure: Measure
    switch r.byte() % 3 {
    case 0: measure = .subjects
    case 1: measure = .attribute(name: "a", lower: lo, upper: hi, integral: integral)
    default: measure = .events(kind: "k", lower: lo, upper: hi, integral: integral, maxContributions: r.int())
    }
    let e = r.double()
    let eps = Epsilon(e)
    require((eps != nil) == (e >= 0x1p-20 && e <= 1_000_000), "Epsilon(\(e)) exists: \(eps != nil)")
    guard let eps else { return }
    require(eps.chargedValue <= e && eps.chargedValue > e - 0x1p-20 && eps.noiseUnits >= 1, "charged \(eps.chargedValue) for \(e)")
    let grouped = r.byte() % 4 == 0
    let q = DPQuery(kind: kind, measure: measure, consentPurpose: nil, predicates: [],
                    groupBy: grouped ? (attribute: "g", domain: ["x", "y"]) : nil, epsilon: eps)
    let plan: [(Coordinate, Epsilon)]
    do {
        plan = try QueryEngine.plan(q)
    } catch is DPParameterError {
        return
    } catch {
        fatalError("plan threw \(error)")
    }
    var units: UInt64 = 0
    for (c, share) in plan {
        require(c.bound <= BoundedSum.maxBound, "bound \(c.bound)")
        require(c.grid.isFinite && c.grid > 0, "grid \(c.grid)")
        require(share.noiseUnits >= 1, "share of 0 units")
        units += share.noiseUnits
    }
    require(units <= eps.noiseUnits * UInt64(plan.count), "shares exceed epsilon")
    let sums = (0..<2).map { _ in r.int64() }
    let engine = QueryEngine(source: FixedSource(sums: sums), accountant: Granting())
    do {
        let result = try engine.run(q, purpose: "p", limit: 1e9, periodSeconds: 1)
        require(result.epsilon == eps.chargedValue, "result epsilon \(result.epsilon) charged \(eps.chargedValue)")
        for v in [result.value].compactMap({ $0 }) + result.groups.map(\.value) {
            require(!v.value.isNaN && !v.ci95.0.isNaN && !v.ci95.1.isNaN, "NaN released")
        }
    } catch {
        fatalError("a planned query failed: \(error)")
    }
}

func primitives(_ r: inout Reader) {
    // Coordinates of every kind, from any numbers.
    let a = r.double(), b = r.double(), c = r.double(), g = r.double()
    let k = r.int(), m = r.int()
    let coordinates: [Coordinate] = [
        .attribute(name: "a", lower: a, upper: b, center: c, grid: g),
        .events(kind: "k", lower: a, upper: b, center: c, grid: g, maxContributions: k),
        .eventCount(kind: "k", maxContributions: k), .product(left: ScaledFeature(name: "a", lower: a, upper: b), right: nil, grid: g),
        .itemPresence(kind: "k", maxItems: m), .itemPairWeight(kind: "k", maxItems: m, unit: k),
        .itemSetPresence(kind: "k", maxItems: m, size: Int(r.byte() % 5)),
    ]
    for coordinate in coordinates { _ = coordinate.bound; _ = coordinate.grid }
    _ = BoundedSum.grid(forBound: a, integral: r.byte() % 2 == 0)
    _ = Grouping.cellCount(dimensions: Int(r.byte() % 40), bins: m)
    let t = r.word(), s = r.word()
    _ = BoundedSum.halfWidthUnits(scaleNumerator: t, scaleDenominator: s, alpha: r.double())
    guard let eps = Epsilon(abs(r.double())) else { return }
    _ = eps.share(r.double())
    _ = eps.split(r.int())
    let bound = r.word() >> (r.byte() % 64)
    do {
        let threshold = try BoundedSum.selectionThreshold(bound: bound, epsilon: eps, delta: r.double())
        require(threshold >= 2, "threshold \(threshold)")
    } catch is DPParameterError {
    } catch {
        fatalError("selectionThreshold threw \(error)")
    }
    var rng = SplitMixWords(state: r.word())
    do {
        let v = try BoundedSum.release(sums: [r.int64()], bound: bound, epsilon: eps, grid: 1, using: &rng)
        require(!v[0].value.isNaN, "NaN released")
    } catch is DPParameterError {
    } catch {
        fatalError("release threw \(error)")
    }
    let y = DiscreteLaplace().sampleNoise(scaleNumerator: t >> (r.byte() % 64), scaleDenominator: s >> (r.byte() % 64), using: &rng)
    _ = y.added(to: r.int64())
    _ = y.isAtLeast(r.int64())
}

struct SplitMixWords: RandomWords {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func job(_ text: String) {
    let jobs: [TrainingJob]
    do {
        jobs = try Vault.parseJobs(text: text, path: "/fuzz/job.yaml")
    } catch let e as VaultError {
        require(e.kind == .invalidInput || e.kind == .notFound, "error kind \(e.kind)")
        return
    } catch {
        fatalError("parseJobs threw \(error)")
    }
    for j in jobs {
        guard let eps = Epsilon(j.epsilon) else { fatalError("parsed epsilon \(j.epsilon) is not releasable") }
        guard let kind = ModelKind(rawValue: j.model) else { fatalError("parsed model \(j.model)") }
        for (name, x) in j.params {
            if let p = ModelParameters.problem(kind, name, x) { fatalError("parsed params.\(name) = \(x): \(p)") }
        }
        var features: [ScaledFeature] = [ScaledFeature(name: "age", lower: 18, upper: 100)]
        var integral: Set<String> = ["age"]
        for d in j.derived.map(\.attribute) {
            do {
                try BoundedSum.checkBounds(lower: d.lower, upper: d.upper, minimumSpan: BoundedSum.minimumDeclaredSpan)
            } catch {
                fatalError("parsed derived bounds [\(d.lower), \(d.upper)]: \(error)")
            }
            features.append(d.feature)
            if d.integral { integral.insert(d.name) }
            for qk in [QueryKind.sum, .mean] {
                let q = DPQuery(kind: qk, measure: .attribute(name: d.name, lower: d.lower, upper: d.upper, integral: d.integral),
                                consentPurpose: nil, predicates: [], groupBy: nil, epsilon: eps)
                do { _ = try QueryEngine.plan(q) } catch let e as DPParameterError {
                    require(e.field == "epsilon", "derived bounds [\(d.lower), \(d.upper)] cannot be planned: \(e)")
                } catch { fatalError("plan threw \(error)") }
            }
            _ = try? BoundedSum.scaleNumerator(bound: Trainer.centredCoordinate(d.feature, integral: d.integral).bound)
        }
        // The models' dry run with every number the parser let through.
        var spec = TrainingSpec(features: features, integral: integral, target: ScaledFeature(name: "y", lower: 0, upper: 1),
                                events: j.events ?? "purchase", params: j.params)
        if kind == .segments { spec.segmentBy = ("g", ["x", "y"]) }
        let session = PrivateSession(source: FixedSource(sums: []), consentPurpose: nil, epsilon: eps, delta: kind.namesItems ? j.delta : 0,
                                     attributes: Set(features.map(\.name) + ["y", "g"]), eventKinds: Set([j.events ?? "purchase"] + j.derived.map(\.attribute.eventKind)),
                                     derived: j.derived.map(\.attribute), dryRun: true)
        do {
            _ = try Trainer.fit(kind, spec: spec, session: session)
        } catch is ModelError {
        } catch is SessionError {
        } catch is DPParameterError {
        } catch {
            fatalError("dry run threw \(error)")
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size >= 1 else { return 0 }
    let rest = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    if data[0] % 2 == 0 {
        guard let text = String(validating: rest, as: UTF8.self) else { return 0 }
        job(text)
    } else {
        var r = Reader(bytes: rest)
        if data[0] % 4 == 1 { planner(&r) } else { primitives(&r) }
    }
    return 0
}

/// `precondition` that keeps its message in an -O build (the crash log then says which property failed).
func require(_ condition: Bool, _ message: @autoclosure () -> String, line: UInt = #line) {
    if !condition { fatalError("property failed: \(message())", line: line) }
}
