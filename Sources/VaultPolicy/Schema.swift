/// The type of a profile field (or of an event's item or value).
public enum FieldType: String, Sendable {
    case string, int, float, date, category, bool
}

/// What ingest does with a value outside a field's `bounds` (or, for a category, its `domain`).
public enum OutOfBounds: String, Sendable {
    /// Refuse the record.
    case reject
    /// Clamp a number to the nearest bound; map a category value outside the domain to `other`.
    case clamp
}

/// One field of the profile schema.
public struct FieldSpec: Sendable, Equatable {
    /// The field name; also the (quoted) SQL column name, so it matches `^[A-Za-z][A-Za-z0-9_]{0,62}$`.
    public let name: String
    public let type: FieldType
    /// Its fideslang data category.
    public let category: String
    /// PII fields are stored only encrypted and never aggregated.
    public let pii: Bool
    /// Whether a blind index allows lookups by this (PII) field.
    public let lookup: Bool
    /// When false, an empty value is accepted and stored as null. Default true.
    public let required: Bool
    /// Public bounds of a numeric field (required for int and float attributes).
    public let bounds: ClosedRange<Double>?
    /// The public domain of a category field.
    public let domain: [String]?
    public let onOutOfBounds: OutOfBounds
    /// Maximum length in bytes of a string value. Default 65536.
    public let maxLength: Int
    /// The line of the field's declaration in the schema file.
    public let line: Int
    /// The name of the field's column in input files (CSV header, JSON Lines key) when it
    /// differs from `name` (`column: SeniorCitizen`); nil: the field's own name.
    public let column: String?

    /// The default `max_length` (64 KiB).
    public static let defaultMaxLength = 65536

    public init(
        name: String, type: FieldType, category: String, pii: Bool = false, lookup: Bool = false,
        required: Bool = true, bounds: ClosedRange<Double>? = nil, domain: [String]? = nil,
        onOutOfBounds: OutOfBounds = .reject, maxLength: Int = FieldSpec.defaultMaxLength, line: Int = 0,
        column: String? = nil
    ) {
        self.column = column
        self.name = name
        self.type = type
        self.category = category
        self.pii = pii
        self.lookup = lookup
        self.required = required
        self.bounds = bounds
        self.domain = domain
        self.onOutOfBounds = onOutOfBounds
        self.maxLength = maxLength
        self.line = line
        self.domainSet = domain.map(Set.init)
    }

    /// The numeric range the DP layer may use for this field: `bounds` for int and float, `0...1`
    /// for bool, nil otherwise.
    public var numericBounds: ClosedRange<Double>? {
        switch type {
        case .int, .float: bounds
        case .bool: 0...1
        default: nil
        }
    }

    /// Hash set of the domain, for fast membership tests on large domains.
    let domainSet: Set<String>?

    public static func == (lhs: FieldSpec, rhs: FieldSpec) -> Bool {
        lhs.name == rhs.name && lhs.type == rhs.type && lhs.category == rhs.category && lhs.pii == rhs.pii
            && lhs.lookup == rhs.lookup && lhs.required == rhs.required && lhs.bounds == rhs.bounds
            && lhs.domain == rhs.domain && lhs.onOutOfBounds == rhs.onOutOfBounds && lhs.column == rhs.column
            && lhs.maxLength == rhs.maxLength && lhs.line == rhs.line
    }
}

/// The value carried by an event kind.
public struct EventValueSpec: Sendable, Equatable {
    /// `int` or `float`.
    public let type: FieldType
    public let bounds: ClosedRange<Double>
    /// Reject (default) or clamp a value outside `bounds` at ingest.
    public let onOutOfBounds: OutOfBounds

    public init(type: FieldType, bounds: ClosedRange<Double>, onOutOfBounds: OutOfBounds = .reject) {
        self.type = type
        self.bounds = bounds
        self.onOutOfBounds = onOutOfBounds
    }
}

/// One kind of event (purchase, rating, ...).
public struct EventKindSpec: Sendable, Equatable {
    public let name: String
    /// Its fideslang data category.
    public let category: String
    /// `string` or `int`: the type of the item key (a catalog key, not personal data).
    public let itemType: FieldType
    public let value: EventValueSpec
    public let line: Int

    public init(name: String, category: String, itemType: FieldType, value: EventValueSpec, line: Int = 0) {
        self.name = name
        self.category = category
        self.itemType = itemType
        self.value = value
        self.line = line
    }
}

/// The profile schema (`policies/schema.yaml`).
public struct Schema: Sendable {
    public let version: Int
    /// The name of the external customer-ID column (stored only as a pseudonym and ciphertext).
    public let subjectIDField: String
    public let subjectIDCategory: String
    /// Fields in file order.
    public let fields: [FieldSpec]
    /// Event kinds in file order.
    public let events: [EventKindSpec]
    /// The file it was loaded from.
    public let file: String
    /// The date attribute that holds a subject's last activity in the source system
    /// (`last_activity: last_login`): ingest sets the subject's last activity from it instead of
    /// from the time of the ingest, so inactivity retention works for stores synced nightly.
    /// Nil: the time a record is written (or an event's time) is the last activity.
    public let lastActivityField: String?

    private let fieldIndex: [String: Int]
    private let eventIndex: [String: Int]

    public init(
        version: Int, subjectIDField: String, subjectIDCategory: String, fields: [FieldSpec],
        events: [EventKindSpec], file: String, lastActivityField: String? = nil
    ) {
        self.lastActivityField = lastActivityField
        self.version = version
        self.subjectIDField = subjectIDField
        self.subjectIDCategory = subjectIDCategory
        self.fields = fields
        self.events = events
        self.file = file
        var fi: [String: Int] = [:]
        for (i, f) in fields.enumerated() where fi[f.name] == nil { fi[f.name] = i }
        var ei: [String: Int] = [:]
        for (i, e) in events.enumerated() where ei[e.name] == nil { ei[e.name] = i }
        self.fieldIndex = fi
        self.eventIndex = ei
    }

    /// Names no field may take: the keys the product itself writes beside a subject's fields in
    /// the JSON of `get` and `export` (`customer_id`, `pseudonym`, `exported_at`, `created_at`,
    /// `updated_at`, `last_activity`, `events`, `consent`, `access_log`, `purposes`, `categories`, `recipients`, `retention`,
    /// `sources`, `accesses`, see `JSONForms`) and
    /// the names reserved for its own sections (`subject`, `privacy`). A field of one of these
    /// names would give the answer a duplicate key and hide either the field or the product's value.
    /// Also `subject_id`, the key column of the attributes table. The loader compares names
    /// lower-cased (`Consent` is refused too).
    public static let reservedFieldNames: Set<String> = [
        "customer_id", "pseudonym", "exported_at", "created_at", "updated_at", "last_activity",
        "events", "consent", "access_log", "subject", "privacy", "subject_id",
        // The access export's Art. 15 sections (`JSONForms.accessExport`).
        "purposes", "categories", "recipients", "retention", "sources", "accesses",
        // Present after `audit archive`: older accesses are in an audit archive.
        "accesses_archived_through",
    ]

    /// The field with this name, if any.
    public func field(named name: String) -> FieldSpec? {
        fieldIndex[name].map { fields[$0] }
    }

    /// The PII fields, in file order.
    public var piiFields: [FieldSpec] { fields.filter(\.pii) }

    /// The attribute (non-PII) fields, in file order.
    public var attributeFields: [FieldSpec] { fields.filter { !$0.pii } }

    /// The event kind with this name, if any.
    public func eventKind(named name: String) -> EventKindSpec? {
        eventIndex[name].map { events[$0] }
    }
}
