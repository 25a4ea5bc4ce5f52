import Yams

/// Loads and validates `schema.yaml` and `policy.yaml`.
///
/// Every problem is reported as a ``PolicyDiagnostic`` with file, line, field path and reason;
/// the first problem found stops the load (callers exit with status 78).
public enum PolicyLoader {
    /// The schema format versions this build reads.
    public static let supportedSchemaVersions: ClosedRange<Int> = 1...1

    /// Loads `<directory>/schema.yaml` and `<directory>/policy.yaml` and cross-checks them.
    public static func load(directory: String) throws(PolicyDiagnostic) -> (schema: Schema, policy: Policy) {
        let dir = directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        let schema = try loadSchema(path: dir + "/schema.yaml")
        let policy = try loadPolicy(path: dir + "/policy.yaml", schema: schema)
        return (schema, policy)
    }

    /// ``load(directory:)``, with the exact text of both files as read (their UTF-8 bytes are
    /// the files' bytes): the store records their SHA-256 as the policy in force.
    public static func loadWithText(directory: String) throws(PolicyDiagnostic)
        -> (schema: Schema, policy: Policy, schemaText: String, policyText: String)
    {
        let dir = directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        let schemaSource = try YAMLSource.read(path: dir + "/schema.yaml")
        let schema = try parseSchema(source: schemaSource)
        let policySource = try YAMLSource.read(path: dir + "/policy.yaml")
        let policy = try parsePolicy(source: policySource, schema: schema)
        try checkCatalogFiles(policy)
        return (schema, policy, schemaSource.text, policySource.text)
    }

    /// Loads and validates a schema file.
    public static func loadSchema(path: String) throws(PolicyDiagnostic) -> Schema {
        let source = try YAMLSource.read(path: path)
        return try parseSchema(source: source)
    }

    /// Loads a policy file and validates it against `schema`.
    public static func loadPolicy(path: String, schema: Schema) throws(PolicyDiagnostic) -> Policy {
        let source = try YAMLSource.read(path: path)
        let policy = try parsePolicy(source: source, schema: schema)
        try checkCatalogFiles(policy)
        return policy
    }

    /// Parses schema YAML held in memory; `file` names it in diagnostics.
    public static func parseSchema(yaml: String, file: String) throws(PolicyDiagnostic) -> Schema {
        try parseSchema(source: YAMLSource(file: file, text: yaml))
    }

    /// Parses policy YAML held in memory; `file` names it in diagnostics.
    public static func parsePolicy(yaml: String, file: String, schema: Schema) throws(PolicyDiagnostic) -> Policy {
        try parsePolicy(source: YAMLSource(file: file, text: yaml), schema: schema)
    }

    // MARK: Schema

    static func parseSchema(source: YAMLSource) throws(PolicyDiagnostic) -> Schema {
        let root = try source.compose()
        let r = NodeReader(file: source.file)
        let top = try r.object(
            root, "", allowed: ["version", "subject_id", "fields", "events", "last_activity"],
            required: ["version", "subject_id", "fields"])

        let versionNode = top["version"]!
        let version = try r.int(versionNode, "version")
        guard supportedSchemaVersions.contains(version) else {
            throw r.fail(versionNode, "version", "unsupported schema version \(version) (this build reads version 1)")
        }

        let subject = try r.object(top["subject_id"]!, "subject_id", allowed: ["field", "category"], required: ["field", "category"])
        let subjectFieldNode = subject["field"]!
        let subjectField = try r.string(subjectFieldNode, "subject_id.field")
        try r.fieldName(subjectField, subjectFieldNode, "subject_id.field")
        let subjectCategory = try r.category(subject["category"]!, "subject_id.category")

        var fields: [FieldSpec] = []
        var folded: [String: String] = [:]   // lower-cased name -> the field's name (SQL ignores case)
        let fieldEntries = try r.mapping(top["fields"]!, "fields")
        for pair in fieldEntries.pairs {
            let path = "fields." + pair.name
            try r.fieldName(pair.name, pair.key, path)
            if let other = folded.updateValue(pair.name, forKey: pair.name.lowercased()) {
                throw r.fail(pair.key, path, "'\(pair.name)' differs from field '\(other)' only by case (column names ignore case); rename one")
            }
            if pair.name == subjectField {
                throw r.fail(
                    pair.key, path,
                    "'\(pair.name)' is the subject_id field; it must not also be listed in fields")
            }
            if Schema.reservedFieldNames.contains(pair.name.lowercased()) {
                throw r.fail(
                    pair.key, path,
                    "'\(pair.name)' is a key the product itself writes in get and export answers (reserved: \(Schema.reservedFieldNames.sorted().joined(separator: ", "))); rename the field")
            }
            let field = try parseField(name: pair.name, key: pair.key, node: pair.value, path: path, r)
            fields.append(field)
        }
        // Input column names (a field's `column:` or its name) must be unique, and differ from
        // the subject_id field's.
        var inputColumns: [String: String] = [subjectField: subjectField]
        for (pair, field) in zip(fieldEntries.pairs, fields) {
            let col = field.column ?? field.name
            if let other = inputColumns.updateValue(field.name, forKey: col), other != field.name {
                let node = (try? r.mapping(pair.value, "fields." + pair.name))?["column"] ?? pair.key
                throw r.fail(node, "fields." + pair.name + (field.column == nil ? "" : ".column"),
                             "input column \"\(col)\" is already the column of \(other == subjectField ? "the subject_id field" : "field " + other); give one of them another column")
            }
        }

        var events: [EventKindSpec] = []
        if let eventsNode = top["events"] {
            let eventEntries = try r.mapping(eventsNode, "events")
            for pair in eventEntries.pairs {
                let path = "events." + pair.name
                try r.identifier(pair.name, pair.key, path, what: "event kind")
                events.append(try parseEvent(name: pair.name, key: pair.key, node: pair.value, path: path, r))
            }
        }
        // `last_activity: FIELD`: a date attribute of the schema whose value is the subject's
        // last activity (stored in the clear on the subject row, so never a PII field).
        var lastActivityField: String?
        if let node = top["last_activity"] {
            let name = try r.string(node, "last_activity")
            guard let field = fields.first(where: { $0.name == name }) else {
                throw r.fail(node, "last_activity", "'\(name)' is not a field of the schema" + NodeReader.suggestion(name, Set(fields.map(\.name))))
            }
            guard field.type == .date else {
                throw r.fail(node, "last_activity", "field '\(name)' is of type \(field.type.rawValue); the last activity must be a date field")
            }
            guard !field.pii else {
                throw r.fail(node, "last_activity", "field '\(name)' is PII; the last activity is stored in the clear, so it must be an attribute (pii: false)")
            }
            lastActivityField = name
        }
        return Schema(
            version: version, subjectIDField: subjectField, subjectIDCategory: subjectCategory, fields: fields,
            events: events, file: source.file, lastActivityField: lastActivityField)
    }

    static let fieldKeys = [
        "type", "category", "pii", "lookup", "required", "bounds", "domain", "on_out_of_bounds", "max_length", "column",
    ]

    static func fieldType(_ node: Node, _ path: String, _ r: NodeReader, allowed: [FieldType]) throws(PolicyDiagnostic)
        -> FieldType
    {
        let text = try r.string(node, path)
        guard let type = FieldType(rawValue: text), allowed.contains(type) else {
            throw r.fail(
                node, path,
                "unknown type '\(text)' (expected one of: \(allowed.map(\.rawValue).joined(separator: ", ")))")
        }
        return type
    }

    static func parseField(name: String, key: Node, node: Node, path: String, _ r: NodeReader) throws(PolicyDiagnostic)
        -> FieldSpec
    {
        let e = try r.object(node, path, allowed: fieldKeys, required: ["type", "category"])
        let type = try fieldType(e["type"]!, path + ".type", r, allowed: [.string, .int, .float, .date, .category, .bool])
        let category = try r.category(e["category"]!, path + ".category")
        let pii = try e["pii"].map { n throws(PolicyDiagnostic) in try r.bool(n, path + ".pii") } ?? false
        let lookup = try e["lookup"].map { n throws(PolicyDiagnostic) in try r.bool(n, path + ".lookup") } ?? false
        let required = try e["required"].map { n throws(PolicyDiagnostic) in try r.bool(n, path + ".required") } ?? true

        if !pii, let root = Taxonomy.identifyingRoot(of: category) {
            throw r.fail(
                e["category"], path,
                "category '\(category)' identifies a person (\(root)) but the field is not PII; add pii: true (it is then stored only encrypted and never aggregated)")
        }
        if lookup, !pii {
            throw r.fail(
                e.keyNode("lookup"), path + ".lookup",
                "lookup applies only to PII fields (blind indexes exist only for pii: true)")
        }

        var bounds: ClosedRange<Double>? = nil
        if let b = e["bounds"] {
            guard type == .int || type == .float else {
                throw r.fail(e.keyNode("bounds"), path + ".bounds", "bounds apply only to int and float fields, not \(type.rawValue)")
            }
            bounds = try r.bounds(b, path + ".bounds", integral: type == .int)
        } else if (type == .int || type == .float) && !pii {
            throw r.fail(
                node, path,
                "missing required key 'bounds' (a numeric attribute needs public bounds [lo, hi] for the DP layer)")
        }

        var domain: [String]? = nil
        if let d = e["domain"] {
            guard type == .category else {
                throw r.fail(e.keyNode("domain"), path + ".domain", "domain applies only to category fields, not \(type.rawValue)")
            }
            var values: [String] = []
            var seen: Set<String> = []
            for (i, item) in try r.list(d, path + ".domain").enumerated() {
                let value = try r.scalarText(item, path + ".domain[\(i)]")
                guard seen.insert(value).inserted else {
                    throw r.fail(item, path + ".domain[\(i)]", "duplicate domain value '\(value)'")
                }
                values.append(value)
            }
            guard !values.isEmpty else {
                throw r.fail(d, path + ".domain", "a category field needs a non-empty domain")
            }
            domain = values
        } else if type == .category {
            throw r.fail(node, path, "missing required key 'domain' (a category field needs its public list of values)")
        }

        var onOutOfBounds = OutOfBounds.reject
        if let o = e["on_out_of_bounds"] {
            let opath = path + ".on_out_of_bounds"
            let text = try r.string(o, opath)
            guard let value = OutOfBounds(rawValue: text) else {
                throw r.fail(o, opath, "unknown value '\(text)' (expected reject or clamp)")
            }
            onOutOfBounds = value
            if value == .clamp {
                switch type {
                case .int, .float:
                    if bounds == nil { throw r.fail(o, opath, "clamp needs bounds") }
                case .category:
                    if !(domain ?? []).contains("other") {
                        throw r.fail(o, opath, "clamp on a category maps unknown values to 'other', which the domain must contain")
                    }
                default:
                    throw r.fail(o, opath, "on_out_of_bounds applies only to int, float and category fields")
                }
            }
        }

        var maxLength = FieldSpec.defaultMaxLength
        if let m = e["max_length"] {
            let mpath = path + ".max_length"
            guard type == .string else {
                throw r.fail(e.keyNode("max_length"), mpath, "max_length applies only to string fields")
            }
            maxLength = try r.int(m, mpath)
            guard maxLength >= 1, maxLength <= FieldSpec.defaultMaxLength else {
                throw r.fail(m, mpath, "max_length must be between 1 and \(FieldSpec.defaultMaxLength) bytes")
            }
        }

        var column: String? = nil
        if let c = e["column"] {
            let cpath = path + ".column"
            let text = try r.string(c, cpath)
            // A header cell as files write it: 1 to 64 characters, no control character, no
            // quote or separator, no space at either end.
            guard !text.isEmpty, text.unicodeScalars.count <= 64,
                  !text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F || "\",;".unicodeScalars.contains($0) }),
                  text.first != " ", text.last != " " else {
                throw r.fail(c, cpath, "a column name is 1 to 64 characters without control characters, quotes, commas, semicolons or spaces at either end")
            }
            if text != name { column = text }
        }

        return FieldSpec(
            name: name, type: type, category: category, pii: pii, lookup: lookup, required: required, bounds: bounds,
            domain: domain, onOutOfBounds: onOutOfBounds, maxLength: maxLength, line: key.mark?.line ?? 0, column: column)
    }

    static func parseEvent(name: String, key: Node, node: Node, path: String, _ r: NodeReader) throws(PolicyDiagnostic)
        -> EventKindSpec
    {
        let e = try r.object(node, path, allowed: ["category", "item", "value"], required: ["category", "item", "value"])
        let category = try r.category(e["category"]!, path + ".category")
        if let root = Taxonomy.identifyingRoot(of: category) {
            throw r.fail(
                e["category"], path + ".category",
                "category '\(category)' identifies a person (\(root)); events are stored in plaintext and cannot be PII: declare it as a pii: true field instead")
        }
        let itemType = try fieldType(e["item"]!, path + ".item", r, allowed: [.string, .int])
        let vpath = path + ".value"
        let v = try r.object(e["value"]!, vpath, allowed: ["type", "bounds", "on_out_of_bounds"], required: ["type", "bounds"])
        let vtype = try fieldType(v["type"]!, vpath + ".type", r, allowed: [.int, .float])
        let bounds = try r.bounds(v["bounds"]!, vpath + ".bounds", integral: vtype == .int)
        var onOutOfBounds = OutOfBounds.reject
        if let o = v["on_out_of_bounds"] {
            let text = try r.string(o, vpath + ".on_out_of_bounds")
            guard let value = OutOfBounds(rawValue: text) else {
                throw r.fail(o, vpath + ".on_out_of_bounds", "unknown value '\(text)' (expected reject or clamp)")
            }
            onOutOfBounds = value
        }
        return EventKindSpec(
            name: name, category: category, itemType: itemType,
            value: EventValueSpec(type: vtype, bounds: bounds, onOutOfBounds: onOutOfBounds),
            line: key.mark?.line ?? 0)
    }

    // MARK: Policy

    static func parsePolicy(source: YAMLSource, schema: Schema) throws(PolicyDiagnostic) -> Policy {
        let root = try source.compose()
        let r = NodeReader(file: source.file)
        let top = try r.object(
            root, "", allowed: ["version", "purposes", "retention", "roles", "catalogs", "requests"], required: ["version", "purposes", "roles"])

        let versionNode = top["version"]!
        guard case .scalar(let vs) = versionNode, !vs.string.isEmpty,
            versionNode.tagName == .str || versionNode.tagName == .timestamp
        else {
            throw r.fail(
                versionNode, "version",
                "expected a string such as \"2026-11-01\", found \(NodeReader.describe(versionNode))")
        }
        let version = vs.string

        var purposes: [String: Purpose] = [:]
        var order: [String] = []
        let purposeEntries = try r.mapping(top["purposes"]!, "purposes")
        if purposeEntries.pairs.isEmpty {
            throw r.fail(top["purposes"], "purposes", "declare at least one purpose")
        }
        for pair in purposeEntries.pairs {
            let path = "purposes." + pair.name
            try r.identifier(pair.name, pair.key, path, what: "purpose")
            let purpose = try parsePurpose(name: pair.name, key: pair.key, node: pair.value, path: path, schema: schema, r)
            purposes[pair.name] = purpose
            order.append(pair.name)
        }

        var retention: [RetentionRule] = []
        if let retentionNode = top["retention"] {
            for (i, item) in try r.list(retentionNode, "retention").enumerated() {
                let path = "retention[\(i)]"
                let e = try r.object(item, path, allowed: ["category", "keep", "after"], required: ["category", "keep", "after"])
                let category = try r.category(e["category"]!, path + ".category")
                let keep = try r.duration(e["keep"]!, path + ".keep")
                let afterNode = e["after"]!
                let afterText = try r.scalarText(afterNode, path + ".after")
                guard let after = RetentionAnchor(rawValue: afterText) else {
                    throw r.fail(
                        afterNode, path + ".after", "unknown value '\(afterText)' (expected event_time or last_activity)")
                }
                retention.append(
                    RetentionRule(
                        category: category, keepSeconds: keep.seconds, keepText: keep.text, after: after,
                        line: item.mark?.line ?? 0))
            }
        }

        var roles: [String: Set<String>] = [:]
        let roleEntries = try r.mapping(top["roles"]!, "roles")
        for pair in roleEntries.pairs {
            let path = "roles." + pair.name
            try r.identifier(pair.name, pair.key, path, what: "role")
            var permissions: Set<String> = []
            for (i, (permission, node)) in try r.stringList(pair.value, path).enumerated() {
                if let advice = Taxonomy.retiredPermissions[permission] {
                    throw r.fail(node, path + "[\(i)]", "permission '\(permission)' no longer exists: \(advice)")
                }
                guard Taxonomy.permissions.contains(permission) else {
                    throw r.fail(
                        node, path + "[\(i)]",
                        "unknown permission '\(permission)' (known: \(Taxonomy.permissions.sorted().joined(separator: ", ")))")
                }
                permissions.insert(permission)
            }
            roles[pair.name] = permissions
        }

        let catalogs = try top["catalogs"].map { n throws(PolicyDiagnostic) in try parseCatalogs(n, r) } ?? [:]

        let requests = try top["requests"].map { n throws(PolicyDiagnostic) in try parseRequests(n, r) } ?? .standard

        return Policy(
            version: version, purposes: purposes, purposeOrder: order, retention: retention, roles: roles,
            file: source.file, catalogs: catalogs, requests: requests)
    }

    /// `requests: { deadline: 30d, extension: 60d }`: the request register's deadlines; a key
    /// left out keeps its default (30d, 60d). Durations as `period:` (whole days or hours).
    static func parseRequests(_ node: Node, _ r: NodeReader) throws(PolicyDiagnostic) -> RequestDeadlines {
        let e = try r.object(node, "requests", allowed: ["deadline", "extension"], required: [])
        let standard = RequestDeadlines.standard
        let deadline = try e["deadline"].map { n throws(PolicyDiagnostic) in try r.duration(n, "requests.deadline") }
            ?? (seconds: standard.deadlineSeconds, text: standard.deadlineText)
        let extension_ = try e["extension"].map { n throws(PolicyDiagnostic) in try r.duration(n, "requests.extension") }
            ?? (seconds: standard.extensionSeconds, text: standard.extensionText)
        return RequestDeadlines(deadlineSeconds: deadline.seconds, deadlineText: deadline.text,
                                extensionSeconds: extension_.seconds, extensionText: extension_.text, line: node.mark?.line ?? 0)
    }

    /// `catalogs: { NAME: PATH }`: public item lists training jobs may name (`items_from: NAME`).
    /// A path must be relative to the policy directory and stay in it (checked here as text;
    /// ``checkCatalogFiles(_:)`` follows symbolic links).
    static func parseCatalogs(_ node: Node, _ r: NodeReader) throws(PolicyDiagnostic) -> [String: CatalogDeclaration] {
        var out: [String: CatalogDeclaration] = [:]
        for pair in try r.mapping(node, "catalogs").pairs {
            let path = "catalogs." + pair.name
            try r.identifier(pair.name, pair.key, path, what: "catalog")
            guard out[pair.name] == nil else { throw r.fail(pair.key, path, "duplicate catalog name") }
            let file = try r.string(pair.value, path)
            if let problem = CatalogFile.pathProblem(file) { throw r.fail(pair.value, path, problem) }
            out[pair.name] = CatalogDeclaration(name: pair.name, path: file, line: pair.value.mark?.line ?? pair.key.mark?.line ?? 0)
        }
        return out
    }

    /// Refuses a declared catalog whose file leads outside the policy directory through a
    /// symbolic link (exit 78, policy.yaml's line and field). A catalog file that does not exist
    /// yet passes: `train` reads it, and checks it again, when a job names it.
    static func checkCatalogFiles(_ policy: Policy) throws(PolicyDiagnostic) {
        for declaration in policy.catalogs.values.sorted(by: { $0.line < $1.line }) {
            if case .refused(let reason) = CatalogFile.resolve(declaration.path, policyDirectory: policy.directory) {
                throw PolicyDiagnostic(file: policy.file, line: declaration.line, field: "catalogs." + declaration.name, reason: reason)
            }
        }
    }

    static func parsePurpose(
        name: String, key: Node, node: Node, path: String, schema: Schema, _ r: NodeReader
    ) throws(PolicyDiagnostic) -> Purpose {
        let e = try r.object(
            node, path, allowed: ["data_use", "legal_basis", "may_read", "may_read_pii", "models", "dp_budget", "recipients"],
            required: ["data_use", "legal_basis"])

        let useNode = e["data_use"]!
        let dataUse = try r.string(useNode, path + ".data_use")
        guard Taxonomy.dataUses.contains(dataUse) else {
            throw r.fail(useNode, path + ".data_use", "unknown data use '\(dataUse)'" + NodeReader.suggestion(dataUse, Taxonomy.dataUses))
        }

        let basisNode = e["legal_basis"]!
        let basisText = try r.string(basisNode, path + ".legal_basis")
        guard let legalBasis = LegalBasis(rawValue: basisText) else {
            throw r.fail(
                basisNode, path + ".legal_basis",
                "unknown legal basis '\(basisText)' (expected consent, contract, legal_obligation or legitimate_interest)")
        }

        var mayRead: [String] = []
        if let n = e["may_read"] {
            for (i, (_, item)) in try r.stringList(n, path + ".may_read").enumerated() {
                let ipath = path + ".may_read[\(i)]"
                let category = try r.category(item, ipath)
                let attributes = schema.fields.filter { !$0.pii && Taxonomy.covers(category, $0.category) }
                let events = schema.events.filter { Taxonomy.covers(category, $0.category) }
                let pii = schema.fields.filter { $0.pii && Taxonomy.covers(category, $0.category) }
                if attributes.isEmpty, events.isEmpty, !pii.isEmpty {
                    throw r.fail(
                        item, ipath,
                        "'\(category)' covers only PII fields (\(pii.map(\.name).joined(separator: ", "))); may_read never grants PII, use may_read_pii"
                    )
                }
                mayRead.append(category)
            }
        }

        var mayReadPII: [String] = []
        if let n = e["may_read_pii"] {
            for (i, (_, item)) in try r.stringList(n, path + ".may_read_pii").enumerated() {
                let ipath = path + ".may_read_pii[\(i)]"
                let category = try r.category(item, ipath)
                if !schema.fields.contains(where: { $0.pii && Taxonomy.covers(category, $0.category) }) {
                    throw r.fail(item, ipath, "'\(category)' covers no PII field of the schema")
                }
                mayReadPII.append(category)
            }
        }

        var models: [String] = []
        if let n = e["models"] {
            for (i, (model, item)) in try r.stringList(n, path + ".models").enumerated() {
                guard Taxonomy.models.contains(model) else {
                    throw r.fail(
                        item, path + ".models[\(i)]",
                        "unknown model '\(model)' (known: \(Taxonomy.models.sorted().joined(separator: ", ")))")
                }
                models.append(model)
            }
        }

        var budget: DPBudget? = nil
        if let n = e["dp_budget"] {
            let bpath = path + ".dp_budget"
            let b = try r.object(n, bpath, allowed: ["epsilon", "rho", "delta", "period"], required: ["period"])
            if let rhoNode = b["rho"] {
                // zCDP: rho per period, never together with epsilon; delta is the conversion's.
                if let epsNode = b["epsilon"] {
                    throw r.fail(epsNode, bpath + ".epsilon", "a dp_budget gives rho (zCDP) or epsilon, not both")
                }
                let rho = try r.number(rhoNode, bpath + ".rho")
                guard rho > 0, rho <= DPBudget.maxRho, rho * 1_073_741_824 >= 1 else {
                    throw r.fail(rhoNode, bpath + ".rho", "rho must be a number from 2^-30 (about 9.3e-10) to \(formatNumber(DPBudget.maxRho)), found \(formatNumber(rho))")
                }
                let period = try r.duration(b["period"]!, bpath + ".period")
                var conversionDelta = DPBudget.defaultConversionDelta
                if let deltaNode = b["delta"] {
                    conversionDelta = try r.number(deltaNode, bpath + ".delta")
                    guard conversionDelta >= 1e-15, conversionDelta <= DPBudget.maxDelta else {
                        throw r.fail(deltaNode, bpath + ".delta",
                                     "with rho, delta is the delta of the (epsilon, delta) conversion: between 1e-15 and \(formatNumber(DPBudget.maxDelta)), found \(formatNumber(conversionDelta))")
                    }
                }
                budget = DPBudget(rho: rho, periodSeconds: period.seconds, periodText: period.text, conversionDelta: conversionDelta)
            } else {
            guard let epsNode = b["epsilon"] else {
                throw r.fail(n, bpath, "a dp_budget needs epsilon (pure or approximate DP) or rho (zCDP)")
            }
            let epsilon = try r.number(epsNode, bpath + ".epsilon")
            guard epsilon > 0, epsilon <= 1e6 else {
                throw r.fail(epsNode, bpath + ".epsilon", "epsilon must be > 0 and at most 1e6, found \(formatNumber(epsilon))")
            }
            let period = try r.duration(b["period"]!, bpath + ".period")
            // delta: 0 is pure DP only; absent, the default when a model may need it.
            var delta = models.contains(where: DPBudget.approximateDPModels.contains) ? DPBudget.defaultDelta : 0
            if let deltaNode = b["delta"] {
                delta = try r.number(deltaNode, bpath + ".delta")
                guard delta == 0 || (delta >= 1e-15 && delta <= DPBudget.maxDelta) else {
                    throw r.fail(deltaNode, bpath + ".delta",
                                 "delta must be 0 (pure DP only) or between 1e-15 and \(formatNumber(DPBudget.maxDelta)), found \(formatNumber(delta))")
                }
            }
            budget = DPBudget(epsilon: epsilon, periodSeconds: period.seconds, periodText: period.text, delta: delta)
            }
        }
        if !models.isEmpty, budget == nil {
            throw r.fail(e.keyNode("models"), path + ".models", "a purpose that trains models needs a dp_budget")
        }

        // `recipients: [NAME, ...]`: who receives data for this purpose (shown in access
        // exports, GDPR Art. 15(1)(c)): plain names, each once.
        var recipients: [String] = []
        if let n = e["recipients"] {
            for (i, (recipient, item)) in try r.stringList(n, path + ".recipients").enumerated() {
                let ipath = path + ".recipients[\(i)]"
                guard !recipient.isEmpty, recipient.count <= 200,
                      recipient.unicodeScalars.allSatisfy({ $0.value >= 0x20 && !(0x7f...0x9f).contains($0.value) }) else {
                    throw r.fail(item, ipath, "a recipient is a name of 1 to 200 characters without control characters")
                }
                guard !recipients.contains(recipient) else { throw r.fail(item, ipath, "recipient '\(recipient)' is listed twice") }
                recipients.append(recipient)
            }
        }

        return Purpose(
            name: name, dataUse: dataUse, legalBasis: legalBasis, mayRead: mayRead, mayReadPII: mayReadPII,
            models: models, dpBudget: budget, line: key.mark?.line ?? 0, recipients: recipients)
    }
}
