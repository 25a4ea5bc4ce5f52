import Foundation
import VaultPolicy
import VaultStore
#if canImport(Glibc)
import Glibc
#endif

extension Vault {
    /// The items (and descriptions) of the catalog a job names with `items_from: NAME`: a catalog
    /// the policy declares (`catalogs:` in policy.yaml), read from the policy directory at train
    /// time. The store records policy.yaml (and so the declaration) as part of the policy in
    /// force, not the catalog's content: editing the file needs no `policy apply`.
    ///
    /// Refused: a name the policy does not declare (65, naming the job's field), a file that
    /// leads outside the policy directory (78), an absent file (66), a file that is not a regular
    /// file or is too large (65), and content that is not a catalog (65, naming the line). Runs
    /// before anything is charged.
    func readCatalog(named name: String, for job: TrainingJob) throws -> CatalogFile.Contents {
        guard let declaration = policy.catalogs[name] else {
            let declared = policy.catalogs.keys.sorted()
            throw VaultError(.invalidInput, "\(job.file): items_from: \(name) is not a catalog declared in the policy ("
                             + (declared.isEmpty ? "it declares none" : "catalogs: \(declared.joined(separator: ", "))")
                             + "); declare it in policy.yaml as catalogs: { \(name): catalogs/\(name).tsv }")
        }
        let label = "catalog \(name) (\(declaration.path) in the policy directory)"
        let real: String
        switch CatalogFile.resolve(declaration.path, policyDirectory: policy.directory) {
        case .inside(let path): real = path
        case .missing: throw VaultError(.notFound, "\(label): no such file")
        case .refused(let reason): throw VaultError(.configuration, "\(label): \(reason)")
        }
        let fd = Glibc.open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        guard fd >= 0 else { throw VaultError(.notFound, "\(label): cannot open: \(String(cString: strerror(errno)))") }
        defer { Glibc.close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { throw VaultError(.invalidInput, "\(label): not a regular file") }
        guard st.st_size >= 0, st.st_size <= CatalogFile.maximumBytes else {
            throw VaultError(.invalidInput, "\(label): larger than \(CatalogFile.maximumBytes >> 20) MiB")
        }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size) + 1)
        var length = 0
        while length < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + length, $0.count - length) }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                throw VaultError(.invalidInput, "\(label): cannot read: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            length += n
        }
        guard length < bytes.count else { throw VaultError(.invalidInput, "\(label): the file grew while it was read") }
        bytes.removeSubrange(length...)
        switch CatalogFile.parse(bytes) {
        case .failure(let problem):
            throw VaultError(.invalidInput, "\(label): line \(problem.line): \(problem.reason)")
        case .success(let contents):
            guard !contents.items.isEmpty else { throw VaultError(.invalidInput, "\(label): lists no items") }
            return contents
        }
    }
}
