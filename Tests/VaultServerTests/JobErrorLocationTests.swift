import Foundation
import Hummingbird
import HummingbirdTesting
import ProfileVault
import Testing
import VaultValues

/// Issue 18 leftover: a job's diagnostic carries its place as a structure too: over HTTP the
/// field (a body has no file, and its one JSON line says nothing), in a file the file, line
/// and field; a key that is not a name is never put in the structure.
@Suite struct JobErrorLocationTests {
    @Test func aBadJobBodyIsLocatedByField() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            let r = try await c.call(.post, "/v1/jobs", as: "trainer",
                                     body: #"{"job":"j","purpose":"model_training","model":"kmeans","features":["age"],"epsilon":"lots"}"#)
            #expect(r.status == .badRequest, "\(r.text)")
            guard case .object(let at)? = r.json?["location"] else { Issue.record("no location object: \(r.text)"); return }
            #expect(at.count == 1 && r.json?["location"]?["field"] == .string("epsilon"), "\(r.text)")
            // An unknown key that is not a name (here an e-mail address) is not a location field.
            let k = try await c.call(.post, "/v1/jobs", as: "trainer",
                                     body: #"{"job":"j","purpose":"model_training","model":"kmeans","features":["age"],"epsilon":0.1,"x@example.org":1}"#)
            #expect(k.status == .badRequest)
            #expect(k.json?["location"]?["field"] == nil, "\(k.text)")
            // A derived feature refused when the job is run (an event kind the schema lacks):
            // still no file and no line, only the field.
            let d = try await c.call(.post, "/v1/jobs", as: "trainer",
                                     body: #"{"job":"d","purpose":"model_training","model":"kmeans","features":["age","n"],"derived":{"n":{"events":"no_such_kind","aggregate":"count","bounds":[0,10]}},"epsilon":1.0}"#)
            #expect(d.status == .badRequest, "\(d.text)")
            #expect(d.json?["location"]?["file"] == nil && d.json?["location"]?["line"] == nil, "\(d.text)")
            #expect(d.json?["location"]?["field"]?.stringValue?.hasPrefix("derived.n") == true, "\(d.text)")
        }
    }

    @Test func aBadJobFileIsLocatedByFileLineAndField() throws {
        let text = "job: j\npurpose: model_training\nmodel: kmeans\nfeatures: [age]\nepsilon: lots\n"
        do {
            _ = try Vault.parseJobs(text: text, path: "/tmp/jobs/train.yaml")
            Issue.record("a job with a bad epsilon parsed")
        } catch let e as VaultError {
            #expect(e.kind == .invalidInput)
            #expect(e.location == VaultError.Location(file: "/tmp/jobs/train.yaml", line: 5, field: "epsilon"), "\(String(describing: e.location))")
            #expect(e.message.hasPrefix("/tmp/jobs/train.yaml:5: epsilon: "), "\(e.message)")
            #expect(!e.detail.contains("/tmp/jobs"), "\(e.detail)")
        }
    }
}

/// Found by the contract test (schemathesis, negative data): the job parser reads the body as
/// YAML, so a JSON null, boolean or number where a name belongs became a scalar text
/// (`"job": null` trained a job named `null`, 200). Each such type is now 400 naming the
/// field, nothing charged, audited as a job that does not parse.
@Suite struct JobBodyTypeTests {
    @Test func jsonTypesOfAJobBodyAreChecked() async throws {
        let f = try ServiceFixture()
        try await f.test { c in
            try await c.seed()
            let base = #""purpose":"model_training","model":"kmeans","features":["age"],"params":{"k":2}"#
            let bodies: [(String, String)] = [
                (#"{"job":null,\#(base),"epsilon":0.5}"#, "job"),
                (#"{"job":true,\#(base),"epsilon":0.5}"#, "job"),
                (#"{"job":12,\#(base),"epsilon":0.5}"#, "job"),
                (#"{"job":"j","purpose":null,"model":"kmeans","features":["age"],"epsilon":0.5}"#, "purpose"),
                (#"{"job":"j",\#(base),"epsilon":"0.5"}"#, "epsilon"),
                (#"{"job":"j",\#(base),"epsilon":null}"#, "epsilon"),
                (#"{"job":"j","purpose":"model_training","model":"kmeans","features":"age","epsilon":0.5}"#, "features"),
                (#"{"job":"j","purpose":"model_training","model":"kmeans","features":[1],"epsilon":0.5}"#, "features"),
                (#"{"job":"j","purpose":"model_training","model":"kmeans","features":["age"],"params":[2],"epsilon":0.5}"#, "params"),
            ]
            let before = try await c.call(.get, "/v1/budget", as: "trainer").json?["purposes"]?["model_training"]?["spent"]
            for (body, field) in bodies {
                let r = try await c.call(.post, "/v1/jobs", as: "trainer", body: body)
                #expect(r.status == .badRequest, "\(body): \(r.status) \(r.text.prefix(200))")
                #expect(r.json?["location"]?["field"]?.stringValue == field, "\(body): \(r.text)")
                #expect(r.error?.hasPrefix("request body: \(field): expected") == true, "\(r.text)")
            }
            let after = try await c.call(.get, "/v1/budget", as: "trainer").json?["purposes"]?["model_training"]?["spent"]
            #expect(before != nil && before == after)
            // The refusals are audited as train errors.
            let trains = try f.auditEntries().filter { $0["api.operation"]?.stringValue == "train" && $0["status"]?.stringValue == "error" }
            #expect(trains.count == bodies.count, "\(trains.count)")
            // A well-typed body still trains.
            #expect(try await c.call(.post, "/v1/jobs", as: "trainer", body: #"{"job":"j",\#(base),"epsilon":0.5}"#).status == .ok)
        }
    }
}
