/// The fideslang taxonomy (data categories and data uses) and ProfileVault's own vocabularies
/// (model kinds, role permissions).
///
/// The category and data-use lists are the fideslang default taxonomy (IAB Tech Lab / Ethyca,
/// CC BY 4.0). A name not in these sets is rejected when a schema or policy loads.
public enum Taxonomy {
    /// Whether the category `prefix` covers `category`: it is the category itself or one of its
    /// ancestors. `user.demographic` covers `user.demographic.gender` and `user.demographic`,
    /// but not `user.demographics`.
    @inlinable
    public static func covers(_ prefix: String, _ category: String) -> Bool {
        let p = prefix.utf8, c = category.utf8
        if p.count > c.count { return false }
        if p.count == c.count { return p.elementsEqual(c) }
        guard c.starts(with: p) else { return false }
        return c[c.index(c.startIndex, offsetBy: p.count)] == UInt8(ascii: ".")
    }

    /// The data categories that identify a person, with all their children: a field of one of
    /// them must be declared `pii: true` (stored only encrypted, never aggregated, never in a
    /// `where`); an event kind of one of them is refused (event items and values are stored in
    /// plaintext). Checked when a schema loads.
    public static let identifyingCategories: [String] = [
        "user.contact", "user.name", "user.unique_id", "user.government_id", "user.demographic.date_of_birth",
        "user.financial.bank_account", "user.financial.credit_card", "user.device", "user.location.precise",
    ]

    /// The identifying category (of ``identifyingCategories``) that covers `category`, if any.
    public static func identifyingRoot(of category: String) -> String? {
        identifyingCategories.first { covers($0, category) }
    }

    /// The fideslang default data categories.
    public static let dataCategories: Set<String> = [
        "user",
        "user.account", "user.account.settings", "user.account.username",
        "user.authorization", "user.authorization.credentials", "user.authorization.biometric",
        "user.authorization.password",
        "user.behavior", "user.behavior.browsing_history", "user.behavior.media_consumption",
        "user.behavior.purchase_history", "user.behavior.search_history",
        "user.biometric", "user.biometric.fingerprint", "user.biometric.retinal", "user.biometric.voice",
        "user.biometric.health",
        "user.childrens",
        "user.contact", "user.contact.address", "user.contact.address.city", "user.contact.address.country",
        "user.contact.address.postal_code", "user.contact.address.state", "user.contact.address.street",
        "user.contact.email", "user.contact.phone_number", "user.contact.url", "user.contact.fax_number",
        "user.contact.organization",
        "user.content", "user.content.private", "user.content.public", "user.content.self_image",
        "user.demographic", "user.demographic.age_range", "user.demographic.date_of_birth",
        "user.demographic.gender", "user.demographic.language", "user.demographic.marital_status",
        "user.demographic.political_opinion", "user.demographic.profile", "user.demographic.race_ethnicity",
        "user.demographic.religious_belief", "user.demographic.sexual_orientation",
        "user.location", "user.location.imprecise", "user.location.precise",
        "user.device", "user.device.cookie", "user.device.cookie_id", "user.device.device_id",
        "user.device.ip_address",
        "user.payment",
        "user.social",
        "user.unique_id", "user.unique_id.pseudonymous",
        "user.telemetry",
        "user.user_sensor",
        "user.workplace",
        "user.sensor",
        "user.financial", "user.financial.bank_account", "user.financial.credit_card",
        "user.financial.account_number",
        "user.government_id", "user.government_id.birth_certificate",
        "user.government_id.drivers_license_number", "user.government_id.immigration",
        "user.government_id.national_identification_number", "user.government_id.passport_number",
        "user.government_id.vehicle_registration",
        "user.health_and_medical", "user.health_and_medical.genetic",
        "user.health_and_medical.insurance_beneficiary_id", "user.health_and_medical.record_id",
        "user.name", "user.name.first", "user.name.last",
        "user.criminal_history",
        "user.privacy_preferences",
        "user.job_title",
        "system", "system.authentication", "system.operations",
    ]

    /// The fideslang default data uses.
    public static let dataUses: Set<String> = [
        "analytics", "analytics.reporting", "analytics.reporting.ad_performance",
        "analytics.reporting.content_performance", "analytics.reporting.campaign_insights",
        "analytics.reporting.system", "analytics.reporting.system.performance",
        "collect",
        "employment", "employment.recruitment",
        "essential", "essential.fraud_detection", "essential.legal_obligation", "essential.service",
        "essential.service.authentication", "essential.service.notifications",
        "essential.service.notifications.email", "essential.service.notifications.sms",
        "essential.service.operations", "essential.service.operations.support",
        "essential.service.operations.improve", "essential.service.payment_processing",
        "essential.service.security", "essential.service.upgrades",
        "finance",
        "functional", "functional.storage", "functional.service", "functional.service.improve",
        "marketing", "marketing.advertising", "marketing.advertising.first_party",
        "marketing.advertising.first_party.contextual", "marketing.advertising.first_party.targeted",
        "marketing.advertising.frequency_capping", "marketing.advertising.negative_targeting",
        "marketing.advertising.profiling", "marketing.advertising.serving",
        "marketing.advertising.third_party", "marketing.advertising.third_party.targeted",
        "marketing.communications", "marketing.communications.email", "marketing.communications.sms",
        "operations",
        "personalize", "personalize.content", "personalize.profiling", "personalize.content.limited",
        "personalize.content.profiling", "personalize.content.profiled", "personalize.system",
        "sales",
        "third_party_sharing", "third_party_sharing.legal_obligation",
        "train_ai_system",
    ]

    /// The model kinds a purpose may list under `models`.
    public static let models: Set<String> = [
        "segments", "kmeans", "linear_regression", "logistic_regression", "recommender",
        "segment_cf", "matrix_factorization", "association_rules", "content_based", "random_forest",
    ]

    /// The permissions a role may hold.
    public static let permissions: Set<String> = [
        "ingest", "get", "query", "train", "consent", "erase", "export", "retention", "keys",
        "audit",
        "policy",
        // Data-subject rights (issue 19): rectification (Art. 16), restriction (Art. 18).
        "rectify", "restrict",
        // The request register (`requests open|list|extend|fulfil|deny`), role privacy_officer.
        "requests",
        // Serving a subject (role `app`), not analysis: recommendations and scores for one subject.
        "serve_recommendations", "score",
    ]

    /// Permission names that no longer exist, with what replaced them (a policy naming one is
    /// refused with this advice rather than granted nothing silently).
    public static let retiredPermissions: [String: String] = [
        "recommend": "recommend was replaced by serve_recommendations, held by role app (recommending for a subject is serving that subject, not analysis; trainer keeps query and train)",
    ]
}
