/// The product's version, defined here once: `profilectl --version` prints it and the HTTP
/// service reports it (`profilevault_build_info{version}` in `GET /metrics`).
public enum ProductVersion {
    public static let current = "0.20.0"
}
