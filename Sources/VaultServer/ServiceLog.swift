public import Logging
import Foundation
import Synchronization
import VaultValues
#if canImport(Glibc)
import Glibc
#endif

/// How log lines look on stderr (`serve --log-format`).
public enum LogFormat: String, Sendable, CaseIterable {
    /// swift-log's text lines: `TIME LEVEL LABEL: key=value ... message`.
    case text
    /// One JSON object a line: `time`, `level`, `msg`, `label`, then the metadata keys (for a
    /// request: `request_id`, `method`, `route`, `status`, `duration_ms`, `actor`, `role`).
    case json
}

/// The process's log output: every `Logger` of `profilectl` (the CLI's, the service's, the
/// stores', Hummingbird's and PostgresNIO's) writes through ``ServiceLogHandler``, whose format
/// is this process-wide switch. `serve --log-format json` turns it to JSON before anything is
/// opened, so that every line a service writes on stderr is one JSON object.
///
/// What is logged is chosen by the callers, which never put personal data, tokens, bodies,
/// query strings or request paths in a message or metadata (docs/http.md, "Logs and metrics").
public enum ServiceLog {
    private static let current = Mutex<LogFormat>(.text)

    /// The format of every line written from now on.
    public static var format: LogFormat {
        get { current.withLock { $0 } }
        set { current.withLock { $0 = newValue } }
    }

    /// The handler for `LoggingSystem.bootstrap`.
    public static func handler(label: String, level: Logger.Level) -> any LogHandler {
        ServiceLogHandler(label: label, level: level)
    }

    /// Writes one line whatever the log level (`serving on ...`, the `--insecure-http` warning,
    /// the CLI's final `error:` line): in text form `prefix` + `message`, in JSON form an
    /// object with `level` and `msg`.
    public static func announce(_ message: String, level: Logger.Level, textPrefix: String = "", label: String = "profilevault") {
        switch format {
        case .text: writeLine(textPrefix + message)
        case .json: writeLine(jsonLine(level: level, label: label, message: message, metadata: [:]))
        }
    }

    /// The JSON form of one log event: fixed keys first, then the metadata sorted by key.
    /// Metadata values that are integers or finite numbers (`.stringConvertible` of an `Int`
    /// or a `Double`) are JSON numbers; other values are strings, arrays and objects.
    static func jsonLine(level: Logger.Level, label: String, message: String, metadata: Logger.Metadata, date: Date = Date()) -> String {
        var pairs: [(String, JSONValue)] = [
            ("time", .string(timestamp(date))),
            ("level", .string(level.rawValue)),
            ("msg", .string(message)),
            ("label", .string(label)),
        ]
        let fixed: Set<String> = ["time", "level", "msg", "label"]
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) where !fixed.contains(key) {
            pairs.append((key, json(value)))
        }
        return JSONValue.object(pairs).rendered(pretty: false)
    }

    static func json(_ value: Logger.MetadataValue) -> JSONValue {
        switch value {
        case .string(let s): return .string(s)
        case .stringConvertible(let c):
            if let i = c as? Int { return .int(Int64(i)) }
            if let i = c as? Int64 { return .int(i) }
            if let i = c as? UInt, let n = Int64(exactly: i) { return .int(n) }
            if let d = c as? Double, d.isFinite { return .double(d) }
            if let b = c as? Bool { return .bool(b) }
            return .string(c.description)
        case .array(let items): return .array(items.map(json))
        case .dictionary(let d): return .object(d.sorted { $0.key < $1.key }.map { ($0.key, json($0.value)) })
        }
    }

    /// RFC 3339 in UTC with milliseconds: `2026-12-06T17:01:56.123Z`.
    static func timestamp(_ date: Date) -> String {
        let millis = (date.timeIntervalSince1970 * 1000).rounded(.down)
        guard millis.isFinite, let total = Int64(exactly: millis), total >= 0 else { return "1970-01-01T00:00:00.000Z" }
        var t = time_t(total / 1000)
        var parts = tm()
        gmtime_r(&t, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                      Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), Int(total % 1000))
    }

    /// One `write(2)` of the line and its newline (a line under PIPE_BUF bytes is never
    /// interleaved with another process's or thread's line on a pipe).
    static func writeLine(_ line: String) {
        var bytes = Array(line.utf8)
        bytes.append(UInt8(ascii: "\n"))
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { write(2, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                return
            }
            offset += n
        }
    }
}

/// The log handler of every `Logger` in `profilectl`: swift-log's `StreamLogHandler` on stderr
/// while ``ServiceLog/format`` is `.text`, one JSON object a line when it is `.json`.
public struct ServiceLogHandler: LogHandler {
    private var text: StreamLogHandler
    private let label: String

    public init(label: String, level: Logger.Level) {
        self.label = label
        self.text = StreamLogHandler.standardError(label: label)
        self.text.logLevel = level
    }

    public var logLevel: Logger.Level {
        get { text.logLevel }
        set { text.logLevel = newValue }
    }

    public var metadata: Logger.Metadata {
        get { text.metadata }
        set { text.metadata = newValue }
    }

    public var metadataProvider: Logger.MetadataProvider? {
        get { text.metadataProvider }
        set { text.metadataProvider = newValue }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { text.metadata[key] }
        set { text.metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        switch ServiceLog.format {
        case .text:
            text.log(event: event)
        case .json:
            var merged = text.metadata
            if let provided = text.metadataProvider?.get() { merged.merge(provided) { _, new in new } }
            if let own = event.metadata { merged.merge(own) { _, new in new } }
            ServiceLog.writeLine(ServiceLog.jsonLine(level: event.level, label: label, message: event.message.description, metadata: merged))
        }
    }
}
