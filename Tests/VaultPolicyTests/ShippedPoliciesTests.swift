import Foundation
import Testing
import VaultPolicy

@Suite("Shipped policies/ files")
struct ShippedPoliciesTests {
    static let haveDir = Fixtures.exists(Fixtures.policiesDir + "/schema.yaml")

    @Test("policies/ loads and matches SPEC §2 and §4", .enabled(if: ShippedPoliciesTests.haveDir, "policies/ not found beside the tests"))
    func shippedPoliciesMatchSpec() throws {
        let (schema, policy) = try PolicyLoader.load(directory: Fixtures.policiesDir)
        #expect(schema.version == 1)
        #expect(schema.subjectIDField == "customer_id")
        #expect(schema.subjectIDCategory == "user.unique_id")
        #expect(schema.fields.map(\.name) == ["email", "full_name", "phone", "birth_date", "age", "gender", "country", "annual_income"])
        #expect(schema.piiFields.map(\.name) == ["email", "full_name", "phone", "birth_date"])
        #expect(schema.attributeFields.map(\.name) == ["age", "gender", "country", "annual_income"])
        #expect(schema.field(named: "email")?.lookup == true)
        #expect(schema.field(named: "phone")?.category == "user.contact.phone_number")
        #expect(schema.field(named: "birth_date")?.type == .date)
        #expect(schema.field(named: "age")?.bounds == 18...100)
        #expect(schema.field(named: "gender")?.domain == ["female", "male", "other", "unknown"])
        #expect(schema.field(named: "country")?.domain == ["DE", "FR", "GB", "US", "other"])
        #expect(schema.field(named: "annual_income")?.bounds == 0...250000)
        #expect(schema.field(named: "age")?.line == 10)
        #expect(schema.events.map(\.name) == ["purchase", "rating"])
        #expect(schema.eventKind(named: "purchase")?.value == EventValueSpec(type: .float, bounds: 0...1000))
        #expect(schema.eventKind(named: "rating")?.value.type == .int)
        #expect(schema.eventKind(named: "rating")?.category == "user.behavior")

        #expect(policy.version == "2026-11-01")
        #expect(policy.purposeOrder == ["analytics", "model_training", "customer_support"])
        let analytics = try #require(policy.purpose("analytics"))
        #expect(analytics.dataUse == "analytics.reporting")
        #expect(analytics.legalBasis == .consent)
        #expect(analytics.dpBudget == DPBudget(epsilon: 4, periodSeconds: 30 * 86400, periodText: "30d"))
        let training = try #require(policy.purpose("model_training"))
        #expect(training.models == ["segments", "kmeans", "linear_regression", "logistic_regression", "recommender"])
        #expect(training.dpBudget?.epsilon == 10)
        let support = try #require(policy.purpose("customer_support"))
        #expect(support.legalBasis == .contract)
        #expect(support.dpBudget == nil)
        #expect(support.mayReadPII == ["user.contact.email", "user.name", "user.contact.phone_number"])
        #expect(policy.retention.map(\.category) == ["user.behavior", "user.contact"])
        #expect(policy.retention.map(\.keepSeconds) == [730 * 86400, 1095 * 86400])
        #expect(policy.retention.map(\.after) == [.eventTime, .lastActivity])
        #expect(policy.roles["operator"] == ["ingest"])
        #expect(policy.roles["trainer"] == ["query", "train"])
        #expect(policy.roles["app"] == ["serve_recommendations", "score"])
        #expect(policy.roles["privacy_officer"] == ["consent", "erase", "export", "retention", "keys", "requests", "policy", "rectify", "restrict"])
        #expect(policy.requests == RequestDeadlines.standard && policy.requests.deadlineText == "30d" && policy.requests.extensionText == "60d")
        #expect(policy.role("auditor", allows: "audit"))
        #expect(!policy.role("support", allows: "train"))
        #expect(!policy.role("nobody", allows: "get"))
    }

    static let examples = Fixtures.policiesDir + "/examples"

    @Test(
        "bank-marketing example schema and policy load",
        .enabled(if: Fixtures.exists(ShippedPoliciesTests.examples + "/bank-marketing.schema.yaml"), "example not found"))
    func bankMarketingExample() throws {
        let schema = try PolicyLoader.loadSchema(path: Self.examples + "/bank-marketing.schema.yaml")
        #expect(schema.subjectIDField == "customer_id")
        #expect(schema.fields.map(\.name) == [
            "age", "job", "marital", "education", "default", "balance", "housing", "loan", "contact", "day", "month",
            "duration", "campaign", "pdays", "previous", "poutcome", "y",
        ])
        #expect(schema.piiFields.isEmpty)
        let policy = try PolicyLoader.loadPolicy(path: Self.examples + "/bank-marketing.policy.yaml", schema: schema)
        let training = try #require(policy.purpose("campaign_targeting"))
        #expect(schema.fields.allSatisfy { training.mayRead($0) })
    }

    @Test(
        "online-retail example schema and policy load",
        .enabled(if: Fixtures.exists(ShippedPoliciesTests.examples + "/online-retail.schema.yaml"), "example not found"))
    func onlineRetailExample() throws {
        let schema = try PolicyLoader.loadSchema(path: Self.examples + "/online-retail.schema.yaml")
        let country = try #require(schema.field(named: "country"))
        #expect(country.domain?.contains("United Kingdom") == true)
        #expect(country.domain?.last == "other")
        #expect(try country.parse("Narnia") == .text("other"))
        let purchase = try #require(schema.eventKind(named: "purchase"))
        #expect(purchase.itemType == .string)
        #expect(try purchase.value.parse("-77183.6") == -1000)
        let policy = try PolicyLoader.loadPolicy(path: Self.examples + "/online-retail.policy.yaml", schema: schema)
        #expect(policy.purpose("recommendations")?.mayReadEvents(purchase) == true)
    }

    @Test(
        "mall-customers example schema and policy load",
        .enabled(if: Fixtures.exists(ShippedPoliciesTests.examples + "/mall-customers.schema.yaml"), "example not found"))
    func mallCustomersExample() throws {
        let schema = try PolicyLoader.loadSchema(path: Self.examples + "/mall-customers.schema.yaml")
        #expect(schema.fields.map(\.name) == ["genre", "age", "annual_income", "spending_score"])
        #expect(schema.field(named: "spending_score")?.numericBounds == 1...100)
        #expect(schema.piiFields.isEmpty)
        let policy = try PolicyLoader.loadPolicy(path: Self.examples + "/mall-customers.policy.yaml", schema: schema)
        let segmentation = try #require(policy.purpose("segmentation"))
        #expect(schema.fields.allSatisfy { segmentation.mayRead($0) })
    }

    static let bankCSV = Fixtures.sharedData + "/bank-marketing/bank-train.csv"

    @Test(
        "every bank-marketing row validates against the example schema",
        .enabled(if: Fixtures.exists(ShippedPoliciesTests.bankCSV) && Fixtures.exists(ShippedPoliciesTests.examples + "/bank-marketing.schema.yaml"),
                 "../shared/data/bank-marketing not found"))
    func bankRowsValidate() throws {
        let schema = try PolicyLoader.loadSchema(path: Self.examples + "/bank-marketing.schema.yaml")
        let text = try String(contentsOfFile: Self.bankCSV, encoding: .utf8)
        var lines = text.split(separator: "\n")
        let header = lines.removeFirst().split(separator: ";").map { $0.replacingOccurrences(of: "\"", with: "") }
        let specs = try header.map { name in try #require(schema.field(named: name), "no field \(name)") }
        var count = 0
        for line in lines {
            for (cell, spec) in zip(line.split(separator: ";", omittingEmptySubsequences: false), specs) {
                let raw = cell.hasPrefix("\"") ? cell.dropFirst().dropLast() : cell
                do {
                    _ = try spec.parse(raw)
                } catch {
                    Issue.record("row \(count + 2) \(spec.name): \(error.reason)")
                    return
                }
            }
            count += 1
        }
        #expect(count == 36169)
    }

    static let retailCSV = Fixtures.sharedData + "/online-retail/online_retail_2010-12_2011-09.csv"

    @Test(
        "online-retail rows validate against the example schema (first 50,000)",
        .enabled(if: Fixtures.exists(ShippedPoliciesTests.retailCSV) && Fixtures.exists(ShippedPoliciesTests.examples + "/online-retail.schema.yaml"),
                 "../shared/data/online-retail not found"))
    func retailRowsValidate() throws {
        let schema = try PolicyLoader.loadSchema(path: Self.examples + "/online-retail.schema.yaml")
        let country = try #require(schema.field(named: "country"))
        let purchase = try #require(schema.eventKind(named: "purchase"))
        let text = try String(contentsOfFile: Self.retailCSV, encoding: .utf8)
        var checked = 0
        var clampedCountries = 0
        for line in text.split(separator: "\n").dropFirst().prefix(50_000) {
            // InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country;
            // Description may hold quoted commas, so read the fixed columns from both ends.
            let cols = line.split(separator: ",", omittingEmptySubsequences: false)
            let n = cols.count
            guard n >= 8, !cols[n - 2].isEmpty else { continue }
            let item = try purchase.parseItem(cols[1])
            #expect(!item.isEmpty)
            let quantity = try #require(Double(String(cols[n - 5])))
            let price = try #require(Double(String(cols[n - 3])))
            let value = try purchase.value.parse(Substring(String(quantity * price)))
            #expect(value >= -1000 && value <= 1000)
            #expect(DateParsing.unixSeconds(fromISO8601: cols[n - 4]) != nil, "bad time \(cols[n - 4])")
            if try country.parse(cols[n - 1]) == .text("other") { clampedCountries += 1 }
            checked += 1
        }
        #expect(checked > 30_000)
        #expect(clampedCountries == 0)
    }

    @Test("load(directory:) names the missing file")
    func missingFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pv-policy-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        #expect(throws: PolicyDiagnostic(file: dir.path + "/schema.yaml", reason: "file not found")) {
            try PolicyLoader.load(directory: dir.path)
        }
        try Fixtures.specSchema.write(to: dir.appendingPathComponent("schema.yaml"), atomically: true, encoding: .utf8)
        #expect(throws: PolicyDiagnostic(file: dir.path + "/policy.yaml", reason: "file not found")) {
            try PolicyLoader.load(directory: dir.path)
        }
        try Fixtures.specPolicy.write(to: dir.appendingPathComponent("policy.yaml"), atomically: true, encoding: .utf8)
        let loaded = try PolicyLoader.load(directory: dir.path)
        #expect(loaded.schema.file == dir.path + "/schema.yaml")
        #expect(loaded.policy.file == dir.path + "/policy.yaml")
    }
}
