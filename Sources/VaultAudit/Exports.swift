// The audit chain's entries are `JSONValue`s: whoever imports the audit layer gets the shared
// value types with it.
@_exported public import VaultValues
