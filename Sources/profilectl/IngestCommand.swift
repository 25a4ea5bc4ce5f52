import ArgumentParser
import Foundation
import ProfileVault
import VaultValues

struct Ingest: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Ingest profiles or events (CSV or JSON Lines).", subcommands: [Profiles.self, Events.self])

    struct FileOptions: ParsableArguments {
        @Argument(help: "The input file.") var file: String
        @Option(help: "csv or jsonl (default: from the file name).") var format: String?
        @Flag(help: "Write the good records; put the bad ones with reasons in --rejects.") var skipInvalid = false
        @Option(help: "With --skip-invalid: the file that receives rejected records (line, field, reason; a new file, mode 0600).") var rejects: String?
        @Flag(help: "Replace an existing --rejects file (never the keyring, the store or a policy file).") var force = false
        @Option(help: "Records per transaction.") var batchSize = IngestOptions.defaultBatchSize
        @Flag(help: "Accept customer IDs of erased subjects as new subjects (otherwise such a record is refused).") var allowReingest = false
        @Option(help: "CSV field separator: one ASCII character other than a quote or a line break (default ',').") var delimiter = ","

        func validate() throws {
            if let format, InputFormat(rawValue: format) == nil { throw ValidationError("--format must be csv or jsonl, not \(format)") }
            if rejects != nil && !skipInvalid { throw ValidationError("--rejects needs --skip-invalid") }
            if force && rejects == nil { throw ValidationError("--force needs --rejects") }
            if batchSize < 1 || batchSize > 1_000_000 { throw ValidationError("--batch-size must be between 1 and 1000000") }
            guard Self.delimiterByte(delimiter) != nil else {
                throw ValidationError("--delimiter must be one ASCII character other than a quote or a line break, such as ';' or a tab")
            }
        }

        /// The byte of a `--delimiter`: one ASCII character, not `"`, CR, LF or NUL; `\t` names a tab.
        static func delimiterByte(_ text: String) -> UInt8? {
            let t = text == "\\t" ? "\t" : text
            guard t.utf8.count == 1, let b = t.utf8.first, b < 0x80, b != UInt8(ascii: "\""), b != 0x0A, b != 0x0D, b != 0 else { return nil }
            return b
        }

        var ingestOptions: IngestOptions {
            var o = IngestOptions()
            o.format = format.flatMap(InputFormat.init(rawValue:))
            o.skipInvalid = skipInvalid
            o.rejectsPath = rejects
            o.rejectsForce = force
            o.batchSize = batchSize
            o.allowReingest = allowReingest
            o.delimiter = Self.delimiterByte(delimiter) ?? UInt8(ascii: ",")
            if stderrIsTerminal {
                let started = Date()
                o.progress = { p in
                    let rate = Double(p.records) / max(Date().timeIntervalSince(started), 0.001)
                    let pct = p.totalBytes > 0 ? String(format: " %3.0f%%", 100 * Double(p.bytes) / Double(p.totalBytes)) : ""
                    let line = String(format: "\r%@%@ %d records (%.0f/s)   ", p.phase, pct, p.records, rate)
                    FileHandle.standardError.write(Data((p.phase == "done" ? line + "\n" : line).utf8))
                }
            }
            return o
        }
    }

    static func emit(_ r: IngestReport, options: GlobalOptions, kind: String) {
        options.emit(JSONForms.ingest(r), text: String(format: "%@: %d inserted, %d updated, %d unchanged, %d rejected in %.2f s", kind, r.inserted, r.updated, r.unchanged, r.rejected, r.seconds))
    }

    struct Profiles: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Ingest profiles: header = schema field names; upsert by customer ID.")
        @OptionGroup var options: GlobalOptions
        @OptionGroup var file: FileOptions
        func run() throws {
            let vault = try options.openVault()
            let r = try vault.ingestProfiles(path: file.file, options: file.ingestOptions)
            Ingest.emit(r, options: options, kind: "profiles")
        }
    }

    struct Events: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Ingest events: columns customer_id,kind,item,value,time (ISO 8601).")
        @OptionGroup var options: GlobalOptions
        @OptionGroup var file: FileOptions
        func run() throws {
            let vault = try options.openVault()
            let r = try vault.ingestEvents(path: file.file, options: file.ingestOptions)
            Ingest.emit(r, options: options, kind: "events")
        }
    }
}

