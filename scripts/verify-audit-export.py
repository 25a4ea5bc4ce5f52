#!/usr/bin/env python3
"""Independent verifier of a ProfileVault audit export (JSON Lines), from docs/audit.md alone.

usage: scripts/verify-audit-export.py EXPORT.jsonl PUBLIC-KEY.pem [--expect-head HEX|HEADS.jsonl]

--expect-head takes a head hash from an earlier export, or a file of published heads
(`profilectl audit head --json`, `serve --publish-heads`): each head's signature must verify,
the entry at its sequence number must have its hash, and the export must reach the newest.

Entries may be flat (`--flat`: the stored dotted keys) or nested as OCSF objects (the default
of `audit export`): a nested entry is flattened back (every object but the value of
`unmapped.counts` becomes dotted keys) before it is hashed. A subject's selection
(`audit export --subject`, first line `{"selection":{"subject":..}}`) is checked entry by entry
(each hashes with its own prev_hash and names the subject) and against its signed head (the
count and digest of the selected hashes).

Prints one JSON object {"ok","entries","first_bad","reason"}; exit 0 when ok, 1 otherwise.
Needs Python 3.9+ and the `cryptography` package (Ed25519).
"""
import hashlib, json, sys
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from cryptography.exceptions import InvalidSignature

def canon(v):
    if v is None: return "null"
    if v is True: return "true"
    if v is False: return "false"
    if isinstance(v, int): return str(v)
    if isinstance(v, str):
        out = ['"']
        for ch in v:
            if ch == '"': out.append('\\"')
            elif ch == "\\": out.append("\\\\")
            elif ord(ch) < 0x20: out.append("\\u%04x" % ord(ch))
            else: out.append(ch)
        out.append('"')
        return "".join(out)
    if isinstance(v, list): return "[" + ",".join(canon(x) for x in v) + "]"
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: k.encode("utf-8"))
        return "{" + ",".join(canon(k) + ":" + canon(v[k]) for k in keys) + "}"
    raise ValueError("floats do not occur in audit entries")

class Malformed(Exception):
    pass

def no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d: raise Malformed("duplicate key %r" % k)
        d[k] = v
    return d

def loads(line):
    return json.loads(line, object_pairs_hook=no_duplicates, parse_constant=lambda c: (_ for _ in ()).throw(Malformed(c)))

OBJECT_VALUED = {"unmapped.counts"}

def flatten(obj):
    """The stored (flat) entry of an exported one, nested or flat (docs/audit.md)."""
    out = {}
    def walk(prefix, v):
        if isinstance(v, dict) and prefix not in OBJECT_VALUED:
            if not v: raise Malformed("an empty object in an entry")
            for k, x in v.items():
                if not k: raise Malformed("an empty key in an entry")
                walk(prefix + "." + k, x)
            return
        if prefix in out: raise Malformed("two paths give the key %r" % prefix)
        out[prefix] = v
    for k, v in obj.items():
        if not k: raise Malformed("an empty key in an entry")
        walk(k, v)
    return out

def verify_selection(lines, subject, verify, done):
    n, last, first_seen, hashes = 0, None, None, b""
    head = None
    for line in lines:
        if not line.strip(): continue
        obj = loads(line)
        if type(obj) is not dict: raise Malformed("a line is not a JSON object")
        if head is not None: done(False, n, (last or 0) + 1, "entries after the signed head")
        if "head" in obj: head = obj["head"]; continue
        p, h = hexstr(obj.pop("prev_hash"), "prev_hash", 32), hexstr(obj.pop("hash"), "hash", 32)
        obj = flatten(obj)
        seq = integer(obj["metadata.sequence"], "metadata.sequence")
        n += 1
        if first_seen is None: first_seen = seq
        if last is not None and seq <= last: done(False, n, seq, "sequence out of order")
        if hashlib.sha256(bytes.fromhex(p) + canon(obj).encode("utf-8")).hexdigest() != h: done(False, n, seq, "entry modified")
        if obj.get("unmapped.subject") != subject: done(False, n, seq, "entry not about the selected subject")
        hashes += bytes.fromhex(h)
        last = seq
    if head is None: done(False, n, (last or 0) + 1, "no signed head: truncated")
    msg = "profilevault-audit-selection/v1 %d %s %d %s %s %d %s" % (
        integer(head["first_sequence"], "first_sequence"), head["previous"], integer(head["last_sequence"], "last_sequence"),
        head["hash"], head["subject"], integer(head["selected"], "selected"), head["digest"])
    if head["subject"] != subject or not verify(head["signature"], msg): done(False, n, first_seen, "head signature")
    if first_seen is not None and (first_seen < head["first_sequence"] or last > head["last_sequence"]): done(False, n, first_seen, "entry outside the signed range")
    if head["selected"] != n or hashlib.sha256(hashes).hexdigest() != head["digest"]: done(False, n, first_seen, "entries deleted from or added to the selection")
    done(True, n)

def integer(v, what):
    if type(v) is not int: raise Malformed("%s is not an integer" % what)
    return v

def hexstr(v, what, n=None):
    if type(v) is not str: raise Malformed("%s is not a string" % what)
    b = bytes.fromhex(v)
    if n is not None and len(b) != n: raise Malformed("%s is not %d bytes" % (what, n))
    return v.lower()

def main():
    args = sys.argv[1:]
    expect = None
    if "--expect-head" in args:
        i = args.index("--expect-head"); expect = args[i + 1]; del args[i:i + 2]
    path, pem = args
    key = load_pem_public_key(open(pem, "rb").read())
    def verify(sig_hex, msg):
        try: key.verify(bytes.fromhex(sig_hex), msg.encode()); return True
        except (InvalidSignature, ValueError): return False
    def done(ok, n, bad=None, reason=None):
        print(json.dumps({"ok": ok, "entries": n, "first_bad": bad, "reason": reason})); sys.exit(0 if ok else 1)
    def cp_message(seq, digest, t, pseq, pdig):
        if t is None: return "profilevault-audit-checkpoint/v1 %d %s" % (seq, digest)
        return "profilevault-audit-checkpoint/v2 %d %s %d %d %s" % (seq, digest, t, pseq, pdig)
    published = {}
    if expect is not None and not (len(expect) == 64 and all(c in "0123456789abcdefABCDEF" for c in expect)):
        forks = set()
        for i, line in enumerate(open(expect, "rb"), 1):
            if not line.strip(): continue
            hd = loads(line)
            seq = integer(hd["seq"], "seq")
            h = hexstr(hd["hash"], "hash", 32)
            t = hd.get("time_ms")
            msg = cp_message(seq, h, integer(t, "time_ms") if t is not None else None,
                             integer(hd["previous_seq"], "previous_seq") if t is not None else None,
                             hexstr(hd["previous"], "previous", 32) if t is not None else None)
            if not verify(hexstr(hd["signature"], "signature"), msg): done(False, 0, None, "published head on line %d does not verify" % i)
            if published.get(seq, h) != h: forks.add(seq)
            published[seq] = h
        if not published: done(False, 0, None, "the published heads file holds no head")
        expect = None
    else:
        forks = set()
        if expect is not None: expect = expect.lower()
    prev = start_prev = first = last = None
    n, head, last_cp, seen_expected = 0, None, None, False
    prev_cp = None   # (seq, digest, chained) of the last checkpoint seen in this export
    lines = open(path, "rb")
    for line in lines:
        if not line.strip(): continue
        obj = loads(line)
        if first is None and head is None and type(obj) is dict and "selection" in obj:
            # A selection is signed as such; it does not carry the chain up to a published or
            # expected head, so pinning one cannot be checked on it: refused, never passed.
            if expect is not None or published:
                done(False, 0, None, "--expect-head does not apply to a subject's selection: verify a full export (or the store) against the head")
            verify_selection(lines, hexstr(obj["selection"]["subject"], "subject", 32), verify, done)
        if type(obj) is not dict: raise Malformed("a line is not a JSON object")
        if head is not None: done(False, n, (last or 0) + 1, "entries after the signed head")
        if "head" in obj: head = obj["head"]; continue
        p, h, sig = obj.pop("prev_hash"), obj.pop("hash"), obj.pop("checkpoint_signature", None)
        ct, cps, cpd = obj.pop("checkpoint_time", None), obj.pop("checkpoint_previous_sequence", None), obj.pop("checkpoint_previous", None)
        obj = flatten(obj)
        seq = integer(obj["metadata.sequence"], "metadata.sequence")
        p, h = hexstr(p, "prev_hash", 32), hexstr(h, "hash", 32)
        if ct is not None: ct, cps, cpd = integer(ct, "checkpoint_time"), integer(cps, "checkpoint_previous_sequence"), hexstr(cpd, "checkpoint_previous", 32)
        if first is None:
            first, prev, start_prev, last, last_cp = seq, p, p, seq - 1, seq - 1
            seen_expected = expect == p
        n += 1
        if seq != last + 1: done(False, n, last + 1, "sequence out of order")
        if p != prev: done(False, n, seq, "prev_hash mismatch")
        digest = hashlib.sha256(bytes.fromhex(prev) + canon(obj).encode("utf-8")).hexdigest()
        if digest != h: done(False, n, seq, "entry modified")
        if sig is not None:
            msg = cp_message(seq, digest, ct, cps, cpd)
            if not verify(sig, msg): done(False, n, last_cp + 1, "checkpoint signature")
            chained = ct is not None
            if prev_cp is not None:
                if prev_cp[2] and not chained: done(False, n, prev_cp[0] + 1, "unchained checkpoint after chained ones")
                if chained and (cps != prev_cp[0] or cpd != prev_cp[1]): done(False, n, prev_cp[0] + 1, "checkpoint chain broken: a checkpoint was deleted")
            prev_cp = (seq, hashlib.sha256(msg.encode() + bytes.fromhex(sig)).hexdigest(), chained)
            last_cp = seq
        if seq in forks: done(False, n, seq, "two published heads disagree about this entry: the log was cut back and continued")
        if seq in published and published[seq] != digest: done(False, n, seq, "differs from the published head")
        prev, last = digest, seq
        seen_expected = seen_expected or digest == expect
    if head is None: done(False, n, (last or 0) + 1, "no signed head: truncated")
    msg = "profilevault-audit-export/v1 %d %s %d %s" % (head["first_sequence"], head["previous"], head["last_sequence"], head["hash"])
    if "subject" in head: done(False, n, head["first_sequence"], "a selection's head without its selection line")
    if not verify(head["signature"], msg): done(False, n, None, "head signature")
    if first is not None and (head["first_sequence"] != first or head["previous"] != start_prev): done(False, n, head["first_sequence"], "start cut")
    if (last if last is not None else head["first_sequence"] - 1) != head["last_sequence"]: done(False, n, (last or 0) + 1, "tail cut")
    if prev is not None and prev != head["hash"]: done(False, n, None, "head hash")
    if expect is not None and not seen_expected: done(False, n, (last or 0) + 1, "expected head missing")
    if published and max(published) > (last if last is not None else 0): done(False, n, (last or 0) + 1, "published head beyond the end: truncated")
    done(True, n)

try:
    main()
except SystemExit:
    raise
except (Malformed, KeyError, ValueError, TypeError, AttributeError) as e:
    print(json.dumps({"ok": False, "entries": None, "first_bad": None, "reason": "malformed export or heads file: %s" % e}))
    sys.exit(1)
