public import VaultPolicy

// Builders of the public value types another engine of this package makes (VaultPostgres):
// their memberwise initialisers are internal to this module.

extension ProfileView {
    package static func make(customerID: String, fields: [(name: String, value: ProfileValue)]) -> ProfileView {
        ProfileView(customerID: customerID, fields: fields)
    }
}

extension ErasureReceipt {
    package static func make(customerID: String, erasedAtMillis: Int64, reason: String, removed: [(String, Int64)],
                             auditSequence: Int64, receipt: String) -> ErasureReceipt {
        ErasureReceipt(customerID: customerID, erasedAtMillis: erasedAtMillis, reason: reason, removed: removed,
                       auditSequence: auditSequence, receipt: receipt)
    }
}

extension StoreStatus {
    package static func make(subjects: Int, events: Int, keyVersions: [UInt32], identityKeyVersion: UInt32, schemaVersion: Int,
                             policyVersion: String, fileBytes: Int64, auditEntries: Int64, auditHead: String, policy: PolicyRecord?) -> StoreStatus {
        StoreStatus(subjects: subjects, events: events, keyVersions: keyVersions, identityKeyVersion: identityKeyVersion,
                    schemaVersion: schemaVersion, policyVersion: policyVersion, fileBytes: fileBytes, auditEntries: auditEntries,
                    auditHead: auditHead, policy: policy)
    }
}

extension RecordIssue {
    package static func make(file: String, line: Int, field: String?, reason: String) -> RecordIssue {
        RecordIssue(file: file, line: line, field: field, reason: reason)
    }
}

extension IngestProgress {
    package static func make(phase: String, records: Int, bytes: Int, totalBytes: Int) -> IngestProgress {
        IngestProgress(phase: phase, records: records, bytes: bytes, totalBytes: totalBytes)
    }
}
