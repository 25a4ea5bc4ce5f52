public import Hummingbird
import Foundation
public import VaultValues
import ProfileVault

/// An error answer: an HTTP status and a message for the client, sent as `{"error": "..."}`.
///
/// Messages name the field and the reason, never a value from the request (which may be
/// personal data); 5xx answers carry a generic message and the request id only.
public struct APIError: Error, Sendable, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var message: String
    /// Where in the request the problem is (`{"record": N, "field": F}`), for 4xx answers
    /// about a body's records; never a value.
    public var location: VaultError.Location?

    public init(_ status: HTTPResponse.Status, _ message: String) {
        self.status = status
        self.message = message
    }

    public var description: String { "\(status.code) \(message)" }

    static func badRequest(_ m: String) -> APIError { APIError(.badRequest, m) }

    /// The answer for any error a route throws. `VaultError` kinds map as: usage and invalid
    /// input 400, not found 404, denied 403; unavailable (the HSM token is away) 503;
    /// configuration, integrity, output-file and internal failures
    /// 500 with a generic message (their detail is for the operator's log, not the client).
    /// A 4xx answer says the error's `detail` (what the audit log records: no input value, no
    /// server directory), never its CLI `message`, which may quote a short value.
    static func from(_ error: any Error) -> APIError {
        switch error {
        case let e as APIError:
            return e
        case let e as VaultError:
            switch e.kind {
            case .usage, .invalidInput:
                var a = APIError(.badRequest, clientMessage(e.detail))
                a.location = e.location
                return a
            case .notFound: return APIError(.notFound, clientMessage(e.detail))
            case .denied: return APIError(.forbidden, clientMessage(e.detail))
            case .integrity: return APIError(.internalServerError, "integrity failure: the store did not verify; see the server log")
            case .cannotCreate where e.detail == Vault.erasureJournalFailure:
                // The erasure committed; only the journal beside the store failed. Saying so
                // keeps a client from reading the 500 as "nothing happened".
                return APIError(.internalServerError, Vault.erasureJournalFailure)
            case .configuration, .cannotCreate, .internalFailure: return APIError(.internalServerError, "internal error")
            // The key custody (the PKCS#11 token) is away: the operation may succeed later.
            case .unavailable: return APIError(.serviceUnavailable, "key custody unavailable: the HSM token cannot be reached; try again later")
            }
        case is CancellationError:
            // The request's task was cancelled (its time limit, or the server shutting down).
            return APIError(.serviceUnavailable, "request cancelled")
        case let e as any HTTPResponseError:
            switch e.status {
            case .contentTooLarge: return APIError(.contentTooLarge, "request body too large")
            case .notFound: return APIError(.notFound, "no such route")
            default: return APIError(e.status, e.status.reasonPhrase.lowercased())
            }
        default:
            return APIError(.internalServerError, "internal error")
        }
    }

    /// VaultError messages are written for the CLI; drop the CLI-only hints.
    static func clientMessage(_ m: String) -> String {
        m.replacingOccurrences(of: " (--role)", with: "")
    }

    /// The JSON answer.
    func response(requestID: String) -> Response {
        var fields: [(String, JSONValue)] = [("error", .string(message))]
        if let location, status.code < 500 {
            var at: [(String, JSONValue)] = []
            if let file = location.file {
                // A file of the server is named by its last component only.
                at.append(("file", .string(file.split(separator: "/").last.map(String.init) ?? file)))
                if let line = location.line { at.append(("line", .int(Int64(line)))) }
            } else if let line = location.line {
                at.append(("record", .int(Int64(line))))
            }
            if let field = location.field { at.append(("field", .string(field))) }
            if !at.isEmpty { fields.append(("location", .object(at))) }
        }
        if status.code >= 500 { fields.append(("request_id", .string(requestID))) }
        var headers: HTTPFields = [.contentType: "application/json; charset=utf-8"]
        if status == .unauthorized { headers[.wwwAuthenticate] = "Bearer" }
        return Response(status: status, headers: headers,
                        body: .init(byteBuffer: ByteBuffer(string: JSONValue.object(fields).rendered(pretty: false) + "\n")))
    }
}
