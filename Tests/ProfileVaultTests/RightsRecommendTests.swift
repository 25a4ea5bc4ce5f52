import Foundation
import ProfileVault
import Testing

/// Restriction (Art. 18) and recommendations: a restricted subject gets the answer of an
/// unavailable one (77, the same message) and is served again once the restriction is lifted.
extension TrainTests {
    @Test func aRestrictedSubjectGetsNoRecommendation() throws {
        let s = try store()
        let (model, _) = try recommender(s)
        let served = try recommend(s, model, ["--subject", "C1"])
        #expect(served.status == 0, "\(served.stderr)")
        #expect(try s.run(["restrict", "--subject", "C1", "--role", "privacy_officer"]).status == 0)
        let refused = try s.run(["recommend", "--model", model, "--subject", "C1", "--role", "app"])
        let unknown = try s.run(["recommend", "--model", model, "--subject", "C-NOBODY", "--role", "app"])
        #expect(refused.status == 77 && refused.stderr == unknown.stderr, "\(refused.stderr)")
        #expect(try s.run(["unrestrict", "--subject", "C1", "--role", "privacy_officer"]).status == 0)
        #expect(try recommend(s, model, ["--subject", "C1"]).status == 0)
    }
}
