#!/usr/bin/env python3
"""Helper for scripts/crash-test.sh: generates a profile CSV and checks a store after a kill.

  crash_check.py gen OUT.csv N [SEED]
  crash_check.py check STORE KEYRING CSV BATCH   -> prints JSON {"subjects":..,"sample":[ids]}; exit 1 on failure

Standard library only. The pseudonym of a customer ID is recomputed from the keyring
(HKDF-SHA256(secret, salt "profilevault/v1", info "pv:pseudonym") then HMAC-SHA256 of the
trimmed ID; docs/keys-and-encryption.md), so every stored subject is matched to its CSV record.
"""
import csv, hashlib, hmac, json, random, sqlite3, sys

PII = ["email", "full_name", "phone", "birth_date"]        # PII fields of policies/schema.yaml
LOOKUP = {"email", "phone"}
HEADER = ["customer_id", "email", "full_name", "phone", "birth_date", "age", "gender", "country", "annual_income"]
GIVEN = ["Anna", "Jürgen", "Léa", "Zofia", "Mehmet", "Siobhan", "Nguyễn", "Ji-woo", "O'Brien", "Aarav", "Ngozi", "Wei"]
FAMILY = ["Müller", "Dubois", "Kowalski", "Yılmaz", "Smith, Jr.", "Tanaka", "Okafor", "García", "Ñúñez", "Şahin"]


def gen(out, n, seed=1):
    rnd = random.Random(seed)
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(HEADER)
        for i in range(n):
            cid = "C-%07d" % i
            given, fam = rnd.choice(GIVEN), rnd.choice(FAMILY)
            # Every field is required by policies/schema.yaml; the checker still handles empty
            # optional PII fields (no pii row expected for them).
            email = "%s.%d@example.org" % (given.lower().replace("'", ""), i)
            phone = "+49 30 %07d" % i
            age = rnd.randint(18, 99)
            birth = "%04d-%02d-%02d" % (2026 - age, rnd.randint(1, 12), rnd.randint(1, 28))
            name = "%s %s" % (given, fam)
            w.writerow([cid, email, name, phone, birth, age, rnd.choice(["female", "male", "other", "unknown"]),
                        rnd.choice(["DE", "FR", "GB", "US", "other"]), "%.2f" % rnd.uniform(0, 250000)])


def hkdf(ikm, salt, info, n=32):
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        out += t
        i += 1
    return out[:n]


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def check(store, keyring, csv_path, batch):
    kr = json.load(open(keyring))
    con = sqlite3.connect("file:%s?mode=ro" % store, uri=True)
    meta = dict(con.execute("SELECT key, value FROM meta").fetchall()) if True else {}
    ident = int(meta.get("identity_key_version", kr["active"]))
    secret = bytes.fromhex(next(k["secret"] for k in kr["keys"] if k["version"] == ident))
    pkey = hkdf(secret, b"profilevault/v1", b"pv:pseudonym")

    ic = con.execute("PRAGMA integrity_check").fetchall()
    if ic != [("ok",)]:
        fail("PRAGMA integrity_check: %r" % ic[:5])
    fk = con.execute("PRAGMA foreign_key_check").fetchall()
    if fk:
        fail("PRAGMA foreign_key_check: %r" % fk[:5])

    field_ids = dict(con.execute("SELECT name, id FROM pii_fields").fetchall())
    expected = {}
    with open(csv_path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            cid = row["customer_id"].strip()
            ps = hmac.new(pkey, cid.encode(), hashlib.sha256).digest()
            fields = {field_ids["customer_id"]} | {field_ids[p] for p in PII if row[p] != ""}
            blind = sum(1 for p in LOOKUP if row[p] != "")
            expected[ps] = (cid, fields, blind)

    subjects = con.execute("SELECT id, pseudonym FROM subjects").fetchall()
    # Store format 3: one pii row per subject, column c<id> per PII field, m<id> per lookup field.
    cols = [r[1] for r in con.execute("PRAGMA table_info(pii)")]
    cts = [c for c in cols if c.startswith("c")]
    macs = [c for c in cols if c.startswith("m")]
    pii, blind = {}, {}
    for row in con.execute("SELECT subject_id, %s FROM pii" % ", ".join(cts + macs)):
        sid, values = row[0], row[1:]
        pii[sid] = {int(c[1:]) for c, v in zip(cts, values[:len(cts)]) if v is not None}
        blind[sid] = sum(1 for v in values[len(cts):] if v is not None)
    attrs = set(r[0] for r in con.execute("SELECT subject_id FROM attributes"))
    ids = set()
    present = []
    for sid, ps in subjects:
        ids.add(sid)
        if bytes(ps) not in expected:
            fail("subject row %d has a pseudonym that matches no CSV record" % sid)
        cid, fields, nblind = expected[bytes(ps)]
        if pii.get(sid, set()) != fields:
            fail("subject %s (row %d) is incomplete: pii fields %s, expected %s" % (cid, sid, sorted(pii.get(sid, set())), sorted(fields)))
        if blind.get(sid, 0) != nblind:
            fail("subject %s (row %d): %d blind-index entries, expected %d" % (cid, sid, blind.get(sid, 0), nblind))
        if sid not in attrs:
            fail("subject %s (row %d) has no attributes row" % (cid, sid))
        present.append(cid)
    for table, col in (("pii", "subject_id"), ("attributes", "subject_id")):
        orphans = con.execute("SELECT count(*) FROM %s WHERE %s NOT IN (SELECT id FROM subjects)" % (table, col)).fetchone()[0]
        if orphans:
            fail("%d orphaned rows in %s" % (orphans, table))
    n = len(subjects)
    # Records are committed in file order, `batch` per transaction: the committed prefix is a
    # whole number of batches (or the whole file).
    if n % batch != 0 and n != len(expected):
        fail("%d subjects is not a whole number of %d-record batches" % (n, batch))
    order = sorted(present)
    if order != ["C-%07d" % i for i in range(n)]:
        fail("the subjects present are not the first %d records of the file" % n)
    # Audit: one ingest.profiles entry per committed batch, all with status ok.
    ingest_entries = 0
    inserted = 0
    for (entry,) in con.execute("SELECT entry FROM audit ORDER BY seq"):
        e = json.loads(entry)
        if e.get("api.operation") == "ingest.profiles" and e.get("status") == "ok":
            ingest_entries += 1
            inserted += int(e.get("unmapped.counts", {}).get("inserted", 0))
    if inserted != n:
        fail("audit ingest entries count %d inserted subjects, the store holds %d" % (inserted, n))
    rnd = random.Random(n)
    sample = rnd.sample(present, min(5, len(present)))
    if present:
        sample.append(present[-1])
    print(json.dumps({"subjects": n, "batches": ingest_entries, "sample": sample}))


if __name__ == "__main__":
    if sys.argv[1] == "gen":
        gen(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 1)
    elif sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    elif sys.argv[1] == "expect":
        # expect CSV CUSTOMER_ID -> the record as JSON (for comparing with `get`)
        with open(sys.argv[2], newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if row["customer_id"] == sys.argv[3]:
                    print(json.dumps(row, ensure_ascii=False))
                    break
    else:
        fail("usage: crash_check.py gen|check|expect ...")
