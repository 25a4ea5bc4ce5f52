// The store throws `VaultError` and renders `JSONValue`s: whoever imports it gets the shared
// value types with it.
@_exported public import VaultValues
