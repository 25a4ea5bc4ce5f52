import DifferentialPrivacy
import Testing
import VaultPolicy
import VaultValues
@testable import VaultStore

/// `ItemSums`, which every engine (and the reference source the conformance suite holds them
/// to) feeds: checked here against sums written out by hand, so the shared rules are not only
/// compared with themselves.
@Suite struct ItemSumsTests {
    /// 8-byte pseudonyms; their order of ties is `itemTieBreak`'s, computed separately below.
    static let p1: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8], p2: [UInt8] = [9, 9, 9, 9, 9, 9, 9, 9], p3: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 1]

    func sums(_ r: AggregateRequest, _ subjects: [([UInt8], String?, [(String, Int64)])]) throws -> [String: [Int64]] {
        var s = try ItemSums(r, schema: Fixtures.schema)
        for (p, segment, items) in subjects {
            s.beginSubject(pseudonym: p, segment: segment)
            for (item, t) in items { s.add(item: item, lastUsed: t) }
        }
        return try s.finish()
    }

    @Test func presenceCapsTheMostRecentAndListsTheVocabulary() throws {
        let r = AggregateRequest(consentPurpose: nil, grouping: .items(vocabulary: ["a", "b", "c", "z"]),
                                 coordinates: [.itemPresence(kind: "k", maxItems: 2)])
        // Subject 1: c (30) and a (20) are its two most recent; b (10) is cut. Subject 2: only b.
        let got = try sums(r, [(Self.p1, nil, [("a", 20), ("b", 10), ("c", 30)]), (Self.p2, nil, [("b", 5)])])
        #expect(got == ["a": [1], "b": [1], "c": [1], "z": [0]])
        // No vocabulary: the keys are the items sampled.
        let open = AggregateRequest(consentPurpose: nil, grouping: .items(vocabulary: nil), coordinates: [.itemPresence(kind: "k", maxItems: 1)])
        #expect(try sums(open, [(Self.p1, nil, [("a", 20), ("c", 30)]), (Self.p2, nil, [("c", 1)])]) == ["c": [2]])
    }

    @Test func tiesFollowTheSubjectsHashOrder() throws {
        let r = AggregateRequest(consentPurpose: nil, grouping: .items(vocabulary: nil), coordinates: [.itemPresence(kind: "k", maxItems: 1)])
        for p in [Self.p1, Self.p2, Self.p3] {
            let key = ReferenceAggregateSource.itemTieKey(pseudonym: p)
            let first = ["x", "y", "w"].min { ReferenceAggregateSource.itemTieBreak(subjectKey: key, item: $0) < ReferenceAggregateSource.itemTieBreak(subjectKey: key, item: $1) }!
            #expect(try sums(r, [(p, nil, [("x", 7), ("y", 7), ("w", 7)])]) == [first: [1]])
        }
    }

    @Test func pairsSetsAndSegmentsCountTheCappedSample() throws {
        let v = ["a", "b", "c"]
        // Pairs: 3 items give each pair floor(10 / 2) = 5; 2 items give their pair 10; zero sums absent.
        let pairs = AggregateRequest(consentPurpose: nil, grouping: .itemPairs(vocabulary: v), coordinates: [.itemPairWeight(kind: "k", maxItems: 3, unit: 10)])
        #expect(try sums(pairs, [(Self.p1, nil, [("a", 1), ("b", 2), ("c", 3)]), (Self.p2, nil, [("c", 1), ("a", 2)]), (Self.p3, nil, [("b", 1)])])
                == ["0|1": [5], "0|2": [15], "1|2": [5]])
        // Sets of 2 over a cap of 2: subject 1 keeps c and b (the most recent).
        let sets = AggregateRequest(consentPurpose: nil, grouping: .itemSets(vocabulary: v, size: 2), coordinates: [.itemSetPresence(kind: "k", maxItems: 2, size: 2)])
        #expect(try sums(sets, [(Self.p1, nil, [("a", 1), ("b", 2), ("c", 3)])]) == ["0|1": [0], "0|2": [0], "1|2": [1]])
        // Segments: "female" is index 0 of the domain; a value outside it, or none, counts nowhere.
        let seg = AggregateRequest(consentPurpose: nil, grouping: .segmentItems(attribute: "gender", domain: ["female", "male"], vocabulary: ["a", "b"]),
                                   coordinates: [.itemPresence(kind: "k", maxItems: 5)])
        #expect(try sums(seg, [(Self.p1, "female", [("a", 1), ("b", 2)]), (Self.p2, "other", [("a", 1)]), (Self.p3, nil, [("b", 1)])])
                == ["0|0": [1], "0|1": [1], "1|0": [0], "1|1": [0]])
        // A vocabulary item listed twice stands for its last index.
        let twice = AggregateRequest(consentPurpose: nil, grouping: .itemPairs(vocabulary: ["a", "b", "a"]), coordinates: [.itemPairWeight(kind: "k", maxItems: 3, unit: 4)])
        #expect(try sums(twice, [(Self.p1, nil, [("a", 1), ("b", 2)])]) == ["1|2": [4]])
    }

    @Test func sumsBeyond64BitsAndBadRequestsAreRefused() throws {
        let huge = AggregateRequest(consentPurpose: nil, grouping: .itemPairs(vocabulary: ["a", "b"]), coordinates: [.itemPairWeight(kind: "k", maxItems: 2, unit: Int.max)])
        #expect(try sums(huge, [(Self.p1, nil, [("a", 1), ("b", 2)])]) == ["0|1": [Int64.max]])
        do {
            _ = try sums(huge, [(Self.p1, nil, [("a", 1), ("b", 2)]), (Self.p2, nil, [("a", 1), ("b", 2)])])
            Issue.record("a sum beyond 64 bits was answered")
        } catch let e as VaultError {
            #expect(e.kind == .invalidInput && e.message == "the aggregate overflows 64-bit integers")
        }
        let refusals: [(AggregateRequest, String)] = [
            (AggregateRequest(consentPurpose: nil, grouping: .items(vocabulary: nil), coordinates: [.itemPresence(kind: "k", maxItems: 0)]),
             "max items per subject must be at least 1"),
            (AggregateRequest(consentPurpose: nil, grouping: .items(vocabulary: nil), coordinates: [.itemPairWeight(kind: "k", maxItems: 2, unit: 1)]),
             "this item coordinate does not go with this item grouping"),
            (AggregateRequest(consentPurpose: nil, grouping: .itemSets(vocabulary: ["a"], size: 3), coordinates: [.itemSetPresence(kind: "k", maxItems: 2, size: 2)]),
             "this item coordinate does not go with this item grouping"),
            (AggregateRequest(consentPurpose: nil, grouping: .items(vocabulary: nil), coordinates: [.subjects]),
             "an item grouping takes an item coordinate"),
            (AggregateRequest(consentPurpose: nil, grouping: .segmentItems(attribute: "age", domain: ["1"], vocabulary: ["a"]), coordinates: [.itemPresence(kind: "k", maxItems: 1)]),
             "segment grouping needs a categorical attribute; age is not one"),
        ]
        for (r, message) in refusals {
            do {
                _ = try ItemSums(r, schema: Fixtures.schema)
                Issue.record("accepted: \(message)")
            } catch let error as VaultError {
                #expect(error.kind == .usage && error.message == message, "\(error.message)")
            }
        }
    }
}
