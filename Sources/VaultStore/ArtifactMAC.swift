import VaultCrypto

extension ProfileStore {
    /// HMAC-SHA256 of `message` under the store's model-artifact key (HKDF label
    /// `pv:model-artifact` of the keyring's identity version): only a holder of the keyring can
    /// make a MAC that verifies, so a hand-edited artifact is refused.
    public func modelArtifactMAC(_ message: [UInt8]) -> [UInt8] {
        keys.modelArtifactMAC.mac(message)
    }
}
