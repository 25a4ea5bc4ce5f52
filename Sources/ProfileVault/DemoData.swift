import Foundation
public import VaultPolicy
import VaultStore

/// A small, fast, seedable PRNG (SplitMix64) for reproducible generated data. Not for keys.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Generates a realistic customer population for the default schema (SPEC §2), the same for
/// the same seed: names from many cultures, e-mails, phones, birth dates consistent with age,
/// attributes and purchase/rating events. Used by `profilectl demo`, tests and benchmarks.
public struct DemoPopulation: Sendable {
    struct Culture {
        let country: String
        let dial: String
        let given: [String]
        let family: [String]
        let domains: [String]
    }

    static let cultures: [Culture] = [
        Culture(country: "DE", dial: "+49", given: ["Lena", "Jonas", "Müge", "Lukas", "Anna", "Felix", "Sophie", "Maximilian", "Jürgen", "Hannah", "Emre", "Katharina"],
                family: ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Becker", "Hoffmann", "Schäfer", "Yılmaz", "Koch", "Krüger", "Wagner"], domains: ["web.de", "gmx.de", "posteo.de", "t-online.de"]),
        Culture(country: "FR", dial: "+33", given: ["Camille", "Léa", "Hugo", "Chloé", "Théo", "Manon", "Amélie", "Karim", "Inès", "Loïc", "Yasmine", "Benoît"],
                family: ["Martin", "Bernard", "Dubois", "Lefèvre", "Moreau", "Laurent", "Girard", "Benali", "Rousseau", "Faure", "N'Diaye", "Mercier"], domains: ["orange.fr", "free.fr", "laposte.net"]),
        Culture(country: "GB", dial: "+44", given: ["Oliver", "Amelia", "Harry", "Isla", "George", "Priya", "Aaliyah", "Callum", "Siobhan", "Rhys", "Eilidh", "Mohammed"],
                family: ["Smith", "Jones", "Taylor", "Brown", "Williams", "Patel", "Evans", "O'Brien", "MacDonald", "Khan", "Hughes", "Davies"], domains: ["btinternet.com", "outlook.co.uk", "gmail.com"]),
        Culture(country: "US", dial: "+1", given: ["Emma", "Liam", "Olivia", "Noah", "Sofía", "Mateo", "Aiden", "Jamal", "Mei", "Ethan", "Destiny", "Kai"],
                family: ["Johnson", "Garcia", "Rodriguez", "Nguyen", "Kim", "Washington", "Hernández", "Lee", "Cohen", "Okafor", "Miller", "Begay"], domains: ["gmail.com", "yahoo.com", "icloud.com", "proton.me"]),
        Culture(country: "other", dial: "+81", given: ["Haruto", "Yui", "Sota", "Aoi", "Ren", "Hina"], family: ["Satō", "Suzuki", "Takahashi", "Tanaka", "Watanabe", "Itō"], domains: ["docomo.ne.jp", "yahoo.co.jp"]),
        Culture(country: "other", dial: "+91", given: ["Aarav", "Diya", "Vihaan", "Ananya", "Arjun", "Saanvi"], family: ["Sharma", "Iyer", "Reddy", "Banerjee", "Singh", "Nair"], domains: ["rediffmail.com", "gmail.com"]),
        Culture(country: "other", dial: "+234", given: ["Chinedu", "Ngozi", "Oluwaseun", "Aisha", "Emeka", "Funmilayo"], family: ["Okonkwo", "Adeyemi", "Bello", "Eze", "Balogun", "Nwosu"], domains: ["gmail.com", "yahoo.com"]),
        Culture(country: "other", dial: "+86", given: ["Wei", "Xiu Ying", "Hao", "Li Na", "Jun", "Mei Ling"], family: ["Wang", "Li", "Zhang", "Liu", "Chen", "Zhao"], domains: ["qq.com", "163.com"]),
        Culture(country: "other", dial: "+55", given: ["João", "Ana Clara", "Gustavo", "Beatriz", "Thiago", "Lívia"], family: ["Silva", "Santos", "Oliveira", "Souza", "Pereira", "Araújo"], domains: ["uol.com.br", "gmail.com"]),
        Culture(country: "other", dial: "+84", given: ["Minh", "Lan", "Tuấn", "Hương", "Dũng", "Thảo"], family: ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Võ"], domains: ["gmail.com", "vnn.vn"]),
        Culture(country: "other", dial: "+90", given: ["Zeynep", "Mehmet", "Elif", "Ahmet", "Ayşe", "Can"], family: ["Yılmaz", "Kaya", "Demir", "Şahin", "Çelik", "Öztürk"], domains: ["hotmail.com", "gmail.com"]),
        Culture(country: "other", dial: "+48", given: ["Zofia", "Jakub", "Małgorzata", "Piotr", "Agnieszka", "Wojciech"], family: ["Nowak", "Kowalski", "Wiśniewski", "Wójcik", "Kamiński", "Zieliński"], domains: ["wp.pl", "onet.pl"]),
        Culture(country: "other", dial: "+20", given: ["Omar", "Fatma", "Youssef", "Mariam", "Ahmed", "Nour"], family: ["Hassan", "Mahmoud", "Ibrahim", "El-Sayed", "Mostafa", "Abdelrahman"], domains: ["gmail.com", "yahoo.com"]),
        Culture(country: "other", dial: "+82", given: ["Ji-woo", "Min-jun", "Seo-yeon", "Do-yun", "Ha-eun", "Si-woo"], family: ["Kim", "Lee", "Park", "Choi", "Jung", "Kang"], domains: ["naver.com", "daum.net"]),
    ]
    static let cultureWeights = [22, 14, 14, 20, 3, 4, 3, 3, 3, 3, 3, 3, 2, 3]

    /// The reference date ages are computed against (fixed, so output is reproducible).
    public static let referenceDay: Int32 = DateParsing.days(fromISODate: "2026-11-01")!

    public let count: Int
    public let seed: UInt64
    public init(count: Int, seed: UInt64 = 20261122) {
        self.count = count
        self.seed = seed
    }

    public static let profileHeader = ["customer_id", "email", "full_name", "phone", "birth_date", "age", "gender", "country", "annual_income"]

    public static func customerID(_ i: Int) -> String {
        let s = String(i)
        return "C-" + String(repeating: "0", count: max(0, 7 - s.count)) + s
    }

    /// ASCII local part for an e-mail address from a display name.
    static func asciiFold(_ s: String) -> String {
        let folded = s.folding(options: [.diacriticInsensitive, .caseInsensitive], locale: nil)
        var out = ""
        for u in folded.lowercased().unicodeScalars {
            if (u.value >= 97 && u.value <= 122) || (u.value >= 48 && u.value <= 57) { out.unicodeScalars.append(u) }
            else if u == "ı" { out += "i" } else if u == "ł" { out += "l" } else if u == "đ" { out += "d" } else if u == "ø" { out += "o" }
        }
        return out.isEmpty ? "user" : out
    }

    public struct Profile: Sendable {
        public var customerID, email, fullName, phone, birthDate: String
        public var age: Int
        public var gender, country: String
        public var annualIncome: Double
        public var csvFields: [String] {
            [customerID, email, fullName, phone, birthDate, String(age), gender, country, String(format: "%.2f", annualIncome)]
        }
    }

    /// Profile number `i` (0-based); each profile depends only on seed and index.
    public func profile(_ i: Int) -> Profile {
        var rng = SplitMix64(seed: seed &+ UInt64(i) &* 0x2545_F491_4F6C_DD1D)
        let total = Self.cultureWeights.reduce(0, +)
        var pick = Int(rng.next() % UInt64(total))
        var ci = 0
        while pick >= Self.cultureWeights[ci] { pick -= Self.cultureWeights[ci]; ci += 1 }
        let c = Self.cultures[ci]
        let given = c.given[Int(rng.next() % UInt64(c.given.count))]
        let family = c.family[Int(rng.next() % UInt64(c.family.count))]
        let age = 18 + Int(rng.next() % 70)
        let dayInYear = Int32(rng.next() % 365)
        let birth = Self.referenceDay - Int32(age) * 365 - Int32(age / 4) - dayInYear - 1
        let genders = ["female", "male", "other", "unknown"]
        let gw = rng.next() % 100
        let gender = gw < 48 ? genders[0] : gw < 95 ? genders[1] : gw < 97 ? genders[2] : genders[3]
        let domain = c.domains[Int(rng.next() % UInt64(c.domains.count))]
        let email = "\(Self.asciiFold(given)).\(Self.asciiFold(family)).\(i)@\(domain)"
        let digits = String(format: "%03d %07d", Int(rng.next() % 900) + 100, i % 10_000_000)
        // Income: log-normal-ish, rising with age until 55, clipped to the schema's bounds.
        let u1 = Double(rng.next() % 1_000_000 + 1) / 1_000_001, u2 = Double(rng.next() % 1_000_000) / 1_000_000
        let normal = (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
        let base = 28_000 + 900 * Double(min(age, 55) - 18)
        let income = min(250_000, max(0, base * exp(0.45 * normal)))
        return Profile(customerID: Self.customerID(i), email: email, fullName: "\(given) \(family)", phone: "\(c.dial) \(digits)",
                       birthDate: DateParsing.isoDate(days: birth), age: age, gender: gender, country: c.country, annualIncome: (income * 100).rounded() / 100)
    }

    public struct Event: Sendable {
        public var customerID, kind, item: String
        public var value: Double
        public var time: Int64
        public var csvFields: [String] {
            [customerID, kind, item, kind == "rating" ? String(Int(value)) : String(format: "%.2f", value), DateParsing.iso8601(unixSeconds: time)]
        }
    }

    /// The events of profile `i`: a few purchases of catalog items (popularity skewed) and ratings.
    public func events(_ i: Int) -> [Event] {
        var rng = SplitMix64(seed: (seed ^ 0xE7E7_E7E7) &+ UInt64(i) &* 0x9E37_79B9)
        let n = Int(rng.next() % 9)
        let start: Int64 = 1_735_689_600 // 2025-01-01
        var out: [Event] = []
        let id = Self.customerID(i)
        for _ in 0..<n {
            // Skewed item choice: square of a uniform number favours low item numbers.
            let u = Double(rng.next() % 10_000) / 10_000
            let item = "SKU-" + String(format: "%04d", Int(u * u * 400))
            let price = Double(rng.next() % 40_000 + 199) / 100
            let t = start + Int64(rng.next() % 57_000_000)
            out.append(Event(customerID: id, kind: "purchase", item: item, value: min(price, 1000), time: t))
            if rng.next() % 3 == 0 {
                out.append(Event(customerID: id, kind: "rating", item: item, value: Double(1 + rng.next() % 5), time: t + 86_400))
            }
        }
        return out
    }

    static func csvLine(_ fields: [String]) -> String {
        fields.map { f in
            if f.contains(",") || f.contains("\"") || f.contains("\n") || f.contains("\r") {
                return "\"" + f.replacingOccurrences(of: "\"", with: "\"\"") + "\""
            }
            return f
        }.joined(separator: ",") + "\n"
    }

    /// Writes `profiles.csv` and `events.csv` for the population; returns the event count.
    /// Both are ``OutputFile``s: new files (mode 0600) unless `force`, never a keyring, a
    /// store or a tokens file.
    @discardableResult
    public func writeCSV(profilesPath: String, eventsPath: String?, force: Bool = false) throws -> Int {
        let p = try OutputFile(path: profilesPath, force: force, protecting: [], what: "the profiles file")
        let e = try eventsPath.map { try OutputFile(path: $0, force: force, protecting: [], what: "the events file") }
        func put(_ s: OutputFile, _ text: String) throws { try s.write(text) }
        var chunk = Self.csvLine(Self.profileHeader)
        var eventChunk = Self.csvLine(["customer_id", "kind", "item", "value", "time"])
        var eventCount = 0
        for i in 0..<count {
            chunk += Self.csvLine(profile(i).csvFields)
            if e != nil {
                for ev in events(i) { eventChunk += Self.csvLine(ev.csvFields); eventCount += 1 }
            }
            if chunk.utf8.count > 1 << 20 { try put(p, chunk); chunk = "" }
            if eventChunk.utf8.count > 1 << 20, let e { try put(e, eventChunk); eventChunk = "" }
        }
        try put(p, chunk)
        if let e { try put(e, eventChunk) }
        try p.commit()
        try e?.commit()
        return eventCount
    }
}
