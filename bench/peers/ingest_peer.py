#!/usr/bin/env python3
"""Ingest peer: the same profiles, encrypted the way a team would without ProfileVault.

Python sqlite3 plus the `cryptography` package: HMAC-SHA256 pseudonyms, a random AES-256 DEK per
subject wrapped by a KEK (AES-GCM), every PII field AES-256-GCM with a random nonce and
associated data (subject, field), HMAC blind indexes for e-mail and phone, the same tables,
indexes and batch size as ProfileVault (store format 3: an 8-byte pseudonym key; one pii row per
subject with a column per field and the 64-bit blind-index MACs beside, each MAC column indexed).
No validation beyond parsing (it would only slow the peer down).

usage: ingest_peer.py PROFILES.csv DB [BATCH]  -> prints {"mode":"python","profiles","seconds","rate","peak_rss_mib"}
(BATCH: rows per transaction, default 65536, ProfileVault's default; bench/run.sh passes the
same value to all three ingests)
"""
import csv, hashlib, hmac, json, os, resource, sqlite3, sys, time
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PII = ["email", "full_name", "phone", "birth_date"]
LOOKUP = {"email": lambda v: v.strip().lower(), "phone": lambda v: "".join(ch for ch in v if ch.isdigit())}
ATTRS = ["age", "gender", "country", "annual_income"]

def main(src, path, batch_size=65536):
    for suffix in ("", "-wal", "-shm"):
        try: os.remove(path + suffix)
        except FileNotFoundError: pass
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL"); db.execute("PRAGMA synchronous=FULL"); db.execute("PRAGMA secure_delete=ON")
    db.execute("PRAGMA cache_size=-65536")
    db.executescript("""
      CREATE TABLE subjects(id INTEGER PRIMARY KEY, pseudonym BLOB NOT NULL, kek_version INTEGER, wrapped_dek BLOB, created_at INTEGER, updated_at INTEGER, last_activity INTEGER);
      CREATE INDEX subjects_pseudonym ON subjects(substr(pseudonym, 1, 8));
      CREATE TABLE pii(subject_id INTEGER PRIMARY KEY, c0 BLOB, c1 BLOB, c2 BLOB, c3 BLOB, c4 BLOB, m1 BLOB, m3 BLOB);
      CREATE INDEX pii_m1 ON pii(m1) WHERE m1 IS NOT NULL;
      CREATE INDEX pii_m3 ON pii(m3) WHERE m3 IS NOT NULL;
      CREATE TABLE attributes(subject_id INTEGER PRIMARY KEY, age INTEGER, gender TEXT, country TEXT, annual_income REAL);
    """)
    pseudo_key, blind_key, kek = os.urandom(32), os.urandom(32), AESGCM(os.urandom(32))
    t0 = time.time(); n = 0
    with open(src, newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f)
        batch = []
        def flush():
            now = int(time.time())
            db.execute("BEGIN")
            for r in batch:
                pseudo = hmac.new(pseudo_key, r["customer_id"].strip().encode(), hashlib.sha256).digest()
                dek = os.urandom(32); aead = AESGCM(dek)
                nonce = os.urandom(12)
                wrapped = nonce + kek.encrypt(nonce, dek, b"dek" + pseudo)
                found = db.execute("SELECT id FROM subjects WHERE substr(pseudonym, 1, 8) = substr(?1, 1, 8) AND pseudonym = ?1", (pseudo,)).fetchone()
                if found:   # an update: the same as ProfileVault's upsert
                    sid = found[0]
                    db.execute("UPDATE subjects SET wrapped_dek = ?, updated_at = ? WHERE id = ?", (wrapped, now, sid))
                else:
                    sid = db.execute("INSERT INTO subjects(pseudonym, kek_version, wrapped_dek, created_at, updated_at, last_activity) VALUES (?,1,?,?,?,?)", (pseudo, wrapped, now, now, now)).lastrowid
                fields = [("customer_id", r["customer_id"])] + [(k, r[k]) for k in PII]
                cts = []; macs = []
                for i, (name, value) in enumerate(fields):
                    nonce = os.urandom(12)
                    cts.append(b"\x01" + nonce + aead.encrypt(nonce, value.encode(), pseudo + name.encode()))
                    if name in LOOKUP:
                        macs.append(hmac.new(blind_key, LOOKUP[name](value).encode(), hashlib.sha256).digest()[:8])
                db.execute("INSERT OR REPLACE INTO pii VALUES (?,?,?,?,?,?,?,?)", (sid, *cts, *macs))
                db.execute("INSERT OR REPLACE INTO attributes VALUES (?,?,?,?,?)", (sid, int(r["age"]), r["gender"], r["country"], float(r["annual_income"])))
            db.execute("COMMIT")
            batch.clear()
        for r in rows:
            batch.append(r); n += 1
            if len(batch) >= batch_size: flush()
        if batch: flush()
    s = time.time() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": "python", "profiles": n, "seconds": s, "rate": n / s, "peak_rss_mib": rss}))

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 65536)
