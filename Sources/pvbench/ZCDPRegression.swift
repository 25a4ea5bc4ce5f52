// pvbench zcdp-regression BANK.csv [RUNS]: the accuracy a regression gains from Gaussian noise
// (a zCDP purpose) over Laplace noise at equal (epsilon, delta), on bank marketing.
//
// Logistic regression of y on [age, balance, duration, campaign, pdays, previous, housing, loan]
// (the features of policies/examples/jobs/bank-subscribe.yaml, bounds of
// policies/examples/bank-marketing.schema.yaml), private_ranges 0 for both mechanisms, trained by
// the product's `Regression.fit` through a `PrivateSession` over an in-memory source computing
// the same integer sums as the store; a fixed 80/20 split (every fifth row held out); AUC on
// the held-out fifth, mean over RUNS runs (CSPRNG noise) per epsilon and mechanism.
// Laplace: the job's epsilon E (delta 0, so the comparison favours Laplace by its delta).
// Gaussian: rho with rho + 2 sqrt(rho ln(1/delta)) = E at delta = 1e-6, i.e.
// rho = (sqrt(ln(1/delta) + E) - sqrt(ln(1/delta)))^2.
import DifferentialPrivacy
import Foundation
import PrivateModels
import VaultValues

final class MemoryRegressionSource: AggregateSource, @unchecked Sendable {
    let rows: [[String: Double]]
    init(rows: [[String: Double]]) { self.rows = rows }
    func boundedSums(_ r: AggregateRequest) throws -> [String: [Int64]] {
        guard r.grouping == nil, r.groupBy == nil else { throw SessionError("bench source: ungrouped releases only") }
        func z(_ f: ScaledFeature, _ row: [String: Double]) -> Double { 2 * f.unit(row[f.name] ?? 0) - 1 }
        var sums = [Int64](repeating: 0, count: r.coordinates.count)
        for row in rows {
            for (i, c) in r.coordinates.enumerated() {
                switch c {
                case .subjects: sums[i] += 1
                case let .product(l, rt, g): sums[i] += Int64(((z(l, row) * (rt.map { z($0, row) } ?? 1)) / g).rounded())
                default: throw SessionError("bench source: subjects and products only")
                }
            }
        }
        return ["": sums]
    }
}

func zcdpRegressionBench(path: String, runs: Int) throws -> [(String, JSONValue)] {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw VaultError(.notFound, "\(path): cannot read") }
    var lines = text.split(separator: "\n").map(String.init)
    let header = lines.removeFirst().split(separator: ";").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
    let features: [ScaledFeature] = [
        .init(name: "age", lower: 18, upper: 100), .init(name: "balance", lower: -10000, upper: 110000),
        .init(name: "duration", lower: 0, upper: 5000), .init(name: "campaign", lower: 1, upper: 70),
        .init(name: "pdays", lower: -1, upper: 900), .init(name: "previous", lower: 0, upper: 300),
        .init(name: "housing", lower: 0, upper: 1), .init(name: "loan", lower: 0, upper: 1),
    ]
    let target = ScaledFeature(name: "y", lower: 0, upper: 1)
    var train: [[String: Double]] = [], test: [[String: Double]] = []
    for (i, line) in lines.enumerated() {
        let cells = line.split(separator: ";", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
        guard cells.count == header.count else { continue }
        var row: [String: Double] = [:]
        for (h, c) in zip(header, cells) {
            if let d = Double(c) { row[h] = d } else if c == "yes" { row[h] = 1 } else if c == "no" { row[h] = 0 }
        }
        if i % 5 == 4 { test.append(row) } else { train.append(row) }
    }
    let source = MemoryRegressionSource(rows: train)
    func auc(_ a: ModelArtifact) -> Double {
        let scored = test.map { r in (Regression.predict(a, features.map { r[$0.name] ?? 0 }), r["y"] ?? 0) }.sorted { $0.0 < $1.0 }
        let pos = scored.filter { $0.1 == 1 }.count, neg = scored.count - pos
        var rankSum = 0.0
        var i = 0
        while i < scored.count {   // average ranks over ties
            var j = i
            while j + 1 < scored.count && scored[j + 1].0 == scored[i].0 { j += 1 }
            let rank = Double(i + j) / 2 + 1
            for k in i...j where scored[k].1 == 1 { rankSum += rank }
            i = j + 1
        }
        return (rankSum - Double(pos) * Double(pos + 1) / 2) / (Double(pos) * Double(neg))
    }
    let spec = TrainingSpec(features: features, target: target, params: ["private_ranges": 0])
    let delta = 1e-6, l = log(1 / delta)
    var out: [(String, JSONValue)] = [("mode", .string("zcdp-regression")), ("train_rows", .int(Int64(train.count))),
                                      ("test_rows", .int(Int64(test.count))), ("runs", .int(Int64(runs))), ("delta", .double(delta))]
    var table: [JSONValue] = []
    for e in [0.1, 0.3, 1.0, 3.0] {
        let rho = pow((l + e).squareRoot() - l.squareRoot(), 2)
        var results: [String: (auc: [Double], scale: Double)] = [:]
        for mech in ["laplace", "gaussian"] {
            var aucs: [Double] = []
            var scale = 0.0
            for _ in 0..<runs {
                guard let eps = Epsilon(e) else { throw VaultError(.usage, "epsilon") }
                let s = PrivateSession(source: source, consentPurpose: nil, epsilon: eps, attributes: Set(features.map(\.name) + ["y"]), eventKinds: [])
                if mech == "gaussian" { s.zcdpRho = Rho(rho) }
                let a = try Regression.fit(spec: spec, session: s, logistic: true)
                aucs.append(auc(a))
                scale = s.noiseScales.last?.scales.first ?? 0
            }
            results[mech] = (aucs, scale)
        }
        func mean(_ x: [Double]) -> Double { x.reduce(0, +) / Double(x.count) }
        let lap = results["laplace"]!, gau = results["gaussian"]!
        table.append(.object([("epsilon", .double(e)), ("rho", .double(rho)),
                              ("laplace_auc", .double(mean(lap.auc))), ("gaussian_auc", .double(mean(gau.auc))),
                              ("laplace_noise_sd", .double(lap.scale * 2.0.squareRoot())), ("gaussian_noise_sd", .double(gau.scale))]))
    }
    // Reference: epsilon 10^5 (noise negligible), Laplace.
    if let big = Epsilon(100_000) {
        let s = PrivateSession(source: source, consentPurpose: nil, epsilon: big, attributes: Set(features.map(\.name) + ["y"]), eventKinds: [])
        out.append(("near_noiseless_auc", .double(auc(try Regression.fit(spec: spec, session: s, logistic: true)))))
    }
    out.append(("results", .array(table)))
    return out
}
