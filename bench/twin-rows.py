#!/usr/bin/env python3
"""The plain baseline's rows (bench/postgres.sh, ingest): for the generated CSV, the rows one
profile writes into the store's tables `subjects`, `pii` and `attributes`, with plaintext in
place of what the store computes with keys, as a plain store of the same shape would hold:

  subjects   id: 1..N in file order (the store's ids, too, follow the file);
             pseudonym: the customer ID's UTF-8 bytes zero-padded to 32 (the column's CHECK
               wants 32 bytes; the store writes a 32-byte HMAC);
             kek_version: the store's; wrapped_dek: empty (no key to wrap; NOT NULL);
             created_at, updated_at, last_activity: the load's time; record_digest: NULL (no
             keyed digest); created_batch, updated_batch: 1.
  pii        c<id>: the field's plaintext bytes where the store writes its ciphertext (NULL when
             empty, as the store); m<id> (lookup fields): an 8-byte value where the store
             writes its 8-byte blind-index MAC: the first 8 bytes of the plaintext's SHA-256,
             computed here, untimed (the same size and spread in the index as the MAC, so the
             timed COPY does the index work a plain lookup index of that size does; the
             plaintext itself, 20-30 bytes, would make the baseline's index slower).
  attributes the same typed values as the store (they are plaintext there too).

Usage: twin-rows.py CSV WORKDIR KEK_VERSION, with PSQL, ADMIN_URL and PGPASSWORD in the
environment (the owner). Prints a psql script that loads the CSV into a staging table and has
the server write WORKDIR/twin-<table>.bin (binary COPY format); writes WORKDIR/twin-<table>.cols
(the column list each COPY names). Nothing here is timed.
"""
import csv, os, subprocess, sys

path, work, kek = sys.argv[1], sys.argv[2], int(sys.argv[3])
psql = [os.environ["PSQL"], "-X", "-q", "-t", "-A", "-F", "|", "-d", os.environ["ADMIN_URL"]]

def query(sql):
    out = subprocess.run(psql + ["-c", sql], check=True, capture_output=True, text=True).stdout
    return [line.split("|") for line in out.splitlines() if line]

def ident(name):
    assert name.replace("_", "a").isalnum() and name.isascii(), name
    return '"' + name + '"'

header = next(csv.reader(open(path, newline="")))
fields = {int(i): name for i, name in query("SELECT id, name FROM profilevault.pii_fields")}
def columns(table):
    return query(f"SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'profilevault' "
                 f"AND table_name = '{table}' ORDER BY ordinal_position")

def plain(name):
    return f"convert_to(NULLIF(s.{ident(name)}, ''), 'UTF8')"

selects = {}
selects["subjects"] = [
    ("id", "s.n"),
    ("pseudonym", "decode(rpad(encode(convert_to(s.customer_id, 'UTF8'), 'hex'), 64, '0'), 'hex')"),
    ("kek_version", str(kek)), ("wrapped_dek", "''::bytea"),
    ("created_at", "t.now"), ("updated_at", "t.now"), ("last_activity", "t.now"),
    ("record_digest", "NULL::bytea"), ("created_batch", "1"), ("updated_batch", "1"),
]
have = [c for c, _ in columns("subjects")]
assert sorted(have) == sorted(c for c, _ in selects["subjects"]), f"subjects has columns {have}: update twin-rows.py"
pii = [("subject_id", "s.n")]
for c, _ in columns("pii"):
    if c == "subject_id":
        continue
    assert c[0] in "cm" and c[1:].isdigit(), c
    v = plain(fields[int(c[1:])])
    pii.append((c, v if c[0] == "c" else f"substring(sha256({v}) FROM 1 FOR 8)"))
selects["pii"] = pii
cast = {"bigint": "bigint", "double precision": "double precision", "boolean": "boolean", "text": "text"}
attrs = [("subject_id", "s.n")]
for c, t in columns("attributes"):
    if c == "subject_id":
        continue
    v = f"NULLIF(s.{ident(c)}, '')"
    # Dates are stored as day numbers (integer).
    attrs.append((ident(c), f"({v}::date - DATE '1970-01-01')" if t == "integer" else f"{v}::{cast[t]}"))
selects["attributes"] = attrs

print("CREATE UNLOGGED TABLE bench_twin_src(n bigint GENERATED ALWAYS AS IDENTITY, "
      + ", ".join(f"{ident(h)} text" for h in header) + ");")
print(f"\\copy bench_twin_src({', '.join(ident(h) for h in header)}) FROM '{path}' WITH (FORMAT csv, HEADER true)")
for table, cols in selects.items():
    out = os.path.join(work, f"twin-{table}.bin")
    open(os.path.join(work, f"twin-{table}.cols"), "w").write(", ".join(c for c, _ in cols))
    # Binary COPY wants each value in its column's exact type.
    types = {c: t for c, t in columns(table)}
    body = ", ".join(f"({e})::{types[c.strip(chr(34))]}" for c, e in cols)
    print(f"\\copy (SELECT {body} FROM bench_twin_src s, (SELECT extract(epoch FROM now())::bigint AS now) t ORDER BY s.n) "
          f"TO '{out}' WITH (FORMAT binary)")
print("DROP TABLE bench_twin_src;")
