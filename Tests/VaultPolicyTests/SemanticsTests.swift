import Testing
import VaultPolicy

@Suite("Taxonomy and read permissions")
struct SemanticsTests {
    @Test("a category prefix covers itself and its children, not siblings with a longer name")
    func covers() {
        #expect(Taxonomy.covers("user.demographic", "user.demographic.gender"))
        #expect(Taxonomy.covers("user.demographic", "user.demographic"))
        #expect(Taxonomy.covers("user", "user.contact.address.city"))
        #expect(!Taxonomy.covers("user.demographic", "user.demographics"))
        #expect(!Taxonomy.covers("user.demographic.gender", "user.demographic"))
        #expect(!Taxonomy.covers("user.contact", "user.contacts.email"))
        #expect(!Taxonomy.covers("user.behavior", "user.behavio"))
        #expect(!Taxonomy.covers("", "user"))
    }

    @Test("the taxonomy holds every name SPEC §2 and §4 use")
    func taxonomyHasSpecNames() {
        for c in [
            "user.unique_id", "user.contact.email", "user.name", "user.contact.phone_number",
            "user.demographic.date_of_birth", "user.demographic.age_range", "user.demographic.gender",
            "user.location.imprecise", "user.financial", "user.behavior.purchase_history", "user.behavior",
            "user.demographic", "user.contact", "user.job_title", "user.demographic.marital_status",
            "user.demographic.profile", "system.operations",
        ] {
            #expect(Taxonomy.dataCategories.contains(c), "\(c)")
        }
        for u in ["analytics", "analytics.reporting", "personalize", "essential.service", "marketing.advertising.profiling", "personalize.content.profiled"] {
            #expect(Taxonomy.dataUses.contains(u), "\(u)")
        }
        #expect(Taxonomy.models.isSuperset(of: ["segments", "kmeans", "linear_regression", "logistic_regression", "recommender"]))
        #expect(Taxonomy.permissions.count == 16)
        #expect(Taxonomy.permissions.isSuperset(of: ["rectify", "restrict"]))   // issue 19: Art. 16 and 18
        #expect(Taxonomy.permissions.isSuperset(of: ["serve_recommendations", "score", "requests"]) && !Taxonomy.permissions.contains("recommend"))
        // Every category's parent is itself a category (the taxonomy is a tree).
        for c in Taxonomy.dataCategories where c.contains(".") {
            let parent = String(c[..<c.lastIndex(of: ".")!])
            #expect(Taxonomy.dataCategories.contains(parent), "\(c)")
        }
        for u in Taxonomy.dataUses where u.contains(".") {
            let parent = String(u[..<u.lastIndex(of: ".")!])
            #expect(Taxonomy.dataUses.contains(parent), "\(u)")
        }
    }

    @Test("analytics reads age, gender, country and income, never birth_date or email")
    func analyticsReads() throws {
        let schema = try Fixtures.schema()
        let analytics = try #require(try Fixtures.policy().purpose("analytics"))
        func f(_ n: String) throws -> FieldSpec { try #require(schema.field(named: n)) }
        for n in ["age", "gender", "country", "annual_income"] {
            #expect(analytics.mayRead(try f(n)), "\(n)")
            #expect(analytics.mayReadAttribute(try f(n)), "\(n)")
            #expect(!analytics.mayReadPII(try f(n)), "\(n)")
        }
        for n in ["birth_date", "email", "full_name", "phone"] {
            #expect(!analytics.mayRead(try f(n)), "\(n)")
            #expect(!analytics.mayReadAttribute(try f(n)), "\(n)")
        }
        #expect(analytics.mayReadEvents(try #require(schema.eventKind(named: "purchase"))))
        #expect(analytics.mayReadEvents(try #require(schema.eventKind(named: "rating"))))
    }

    @Test("customer_support reads email, full_name and phone PII, and no attribute")
    func supportReads() throws {
        let schema = try Fixtures.schema()
        let support = try #require(try Fixtures.policy().purpose("customer_support"))
        for field in schema.fields {
            let expected = ["email", "full_name", "phone"].contains(field.name)
            #expect(support.mayRead(field) == expected, "\(field.name)")
            #expect(support.mayReadPII(field) == expected, "\(field.name)")
            #expect(!support.mayReadAttribute(field), "\(field.name)")
        }
        #expect(!support.mayReadEvents(try #require(schema.eventKind(named: "purchase"))))
    }

    @Test("may_read over a category mixing PII and attributes grants only the attributes")
    func mixedCategory() throws {
        let purpose = Purpose(name: "p", dataUse: "analytics", legalBasis: .consent, mayRead: ["user"])
        let schema = try Fixtures.schema()
        #expect(schema.fields.filter { purpose.mayRead($0) }.map(\.name) == ["age", "gender", "country", "annual_income"])
        let pii = Purpose(name: "q", dataUse: "essential.service", legalBasis: .contract, mayReadPII: ["user"])
        #expect(schema.fields.filter { pii.mayRead($0) }.map(\.name) == ["email", "full_name", "phone", "birth_date"])
    }
}
