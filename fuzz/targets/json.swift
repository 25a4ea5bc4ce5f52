// libFuzzer target: the audit JSON parser and canonical form
// (Sources/VaultAudit/JSONValue.swift + JSONParsing.swift).
//
// Properties, for every input the parser accepts (value v):
// - c = canonical(v) parses again, to a value equal to v up to object key order;
// - canonical is idempotent: canonical(parse(c)) == c, byte for byte;
// - c is valid UTF-8, has no bytes < 0x20 outside escapes and no whitespace between tokens;
// - rendered(pretty:) output (the CLI's --json form) parses to a value equal to v when v holds
//   no doubles (doubles are printed with %.1f / description and may round).
// Inputs the parser refuses must fail with a ParseError whose offset lies inside the input.

func sameUpToKeyOrder(_ a: JSONValue, _ b: JSONValue) -> Bool {
    switch (a, b) {
    case let (.object(x), .object(y)):
        guard x.count == y.count else { return false }
        let ys = y.sorted { $0.0.utf8.lexicographicallyPrecedes($1.0.utf8) }
        let xs = x.sorted { $0.0.utf8.lexicographicallyPrecedes($1.0.utf8) }
        for (p, q) in zip(xs, ys) {
            guard p.0.utf8.elementsEqual(q.0.utf8), sameUpToKeyOrder(p.1, q.1) else { return false }
        }
        return true
    case let (.array(x), .array(y)):
        return x.count == y.count && zip(x, y).allSatisfy { sameUpToKeyOrder($0, $1) }
    case let (.string(x), .string(y)):
        return x.utf8.elementsEqual(y.utf8)   // bytes, not Swift's canonical equivalence
    case let (.double(x), .double(y)):
        return x == y || (x.isNaN && y.isNaN)
    default:
        return a == b
    }
}

func hasDouble(_ v: JSONValue) -> Bool {
    switch v {
    case .double: return true
    case .array(let a): return a.contains(where: hasDouble)
    case .object(let o): return o.contains { hasDouble($0.1) }
    default: return false
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let v: JSONValue
    do {
        v = try JSONValue.parse(bytes)
    } catch {
        precondition(error.offset >= 0 && error.offset <= size, "error offset \(error.offset) outside the input of \(size) bytes")
        return 0
    }
    let c = v.canonicalBytes()
    precondition(String(validating: c, as: UTF8.self) != nil, "canonical form is not UTF-8")
    let v2: JSONValue
    do { v2 = try JSONValue.parse(c) } catch {
        fatalError("canonical form does not parse: \(error); canonical = \(String(decoding: c, as: UTF8.self))")
    }
    precondition(sameUpToKeyOrder(v, v2), "parse(canonical(v)) != v; canonical = \(String(decoding: c, as: UTF8.self))")
    let c2 = v2.canonicalBytes()
    precondition(c == c2, "canonical form is not idempotent: \(String(decoding: c, as: UTF8.self)) vs \(String(decoding: c2, as: UTF8.self))")
    if !hasDouble(v) {
        for pretty in [false, true] {
            let r = v.rendered(pretty: pretty)
            guard let v3 = try? JSONValue.parse(r) else { fatalError("rendered(pretty: \(pretty)) does not parse: \(r)") }
            precondition(sameUpToKeyOrder(v, v3), "rendered(pretty: \(pretty)) changes the value: \(r)")
        }
    }
    return 0
}
