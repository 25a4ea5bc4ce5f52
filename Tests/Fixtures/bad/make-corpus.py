#!/usr/bin/env python3
"""Writes the bad-input corpus: one folder per case with case.json and its input files.

Run from anywhere: python3 Tests/Fixtures/bad/make-corpus.py  (rewrites every case folder).
Cases are data; this script only makes files with invalid UTF-8, CRLF, 64 KiB fields and the
like reproducible. case.json keys (read by Tests/ProfileVaultTests/BadInputCorpusTests.swift):

  description       what is wrong
  args              profilectl arguments; $STORE $KEYS $POLICY $CASE (this folder) $TMP (scratch)
  expect_exit       the SPEC §8 exit status
  stderr_contains   strings the one `error:` line must contain (file, line, field, reason)
  must_not_contain  PII values from the input that must not appear on stdout or stderr
  policy_files      {"schema.yaml": "file in case"}: the policy dir is policies/ with these replaced
  keyring_file      a file in the case copied to $KEYS (mode keyring_mode, default 0600)
  keyring_mode      octal string, e.g. "0644"
  env               extra environment ("" unsets a variable)
  no_store          the command must not leave a file at $TMP/new.sqlite
  known_issue       set while the case fails because of an open bug (docs/reliability.md)
"""
import json, os, shutil

ROOT = os.path.dirname(os.path.abspath(__file__))
HEADER = "customer_id,email,full_name,phone,birth_date,age,gender,country,annual_income"
# Valid new customers (not in the test store) that a refused file must not write.
GOOD1 = "CN-1001,new.one@example.net,Neue Person,+49 40 1111,1985-03-04,41,female,DE,52000"
GOOD2 = "CN-1002,new.two@example.net,Autre Personne,+33 1 2222,1990-12-31,35,male,FR,61000.5"
SECRET_ID, SECRET_MAIL, SECRET_NAME = "CX-SECRET-7", "anna.secret@example.org", "Anna Geheimnis"
SECRET_PHONE = "+49 30 98765432"
cases = {}


def case(name, description, args, expect, contains, files=None, **extra):
    c = {"description": description, "args": args, "expect_exit": expect, "stderr_contains": contains}
    c.update(extra)
    cases[name] = (c, files or {})


def bad_row(**over):
    row = dict(customer_id=SECRET_ID, email=SECRET_MAIL, full_name=SECRET_NAME, phone=SECRET_PHONE,
               birth_date="1980-01-01", age="46", gender="female", country="DE", annual_income="10000")
    row.update(over)
    return ",".join(row[k] for k in HEADER.split(","))


def profiles_csv(name, description, row_or_text, contains, line=3, secrets=None, raw=None, **extra):
    text = raw if raw is not None else "\n".join([HEADER, GOOD1, row_or_text, GOOD2]) + "\n"
    must = secrets if secrets is not None else [SECRET_ID, SECRET_MAIL, SECRET_NAME, SECRET_PHONE]
    case(name, description, ["ingest", "profiles", "$CASE/profiles.csv"], 65,
         ["profiles.csv" + (":%d" % line if line else "")] + contains,
         {"profiles.csv": text}, must_not_contain=must, **extra)


# ---- profile CSV ------------------------------------------------------------------------
profiles_csv("csv-impossible-date", "birth date 2000-02-30 does not exist", bad_row(birth_date="2000-02-30"), ["field birth_date"])
profiles_csv("csv-malformed-date", "birth date in DD/MM/YYYY", bad_row(birth_date="30/01/1980"), ["field birth_date"])
profiles_csv("csv-age-out-of-bounds", "age 150 outside bounds [18, 100]", bad_row(age="150"), ["field age"])
profiles_csv("csv-age-not-a-number", "age is text", bad_row(age="forty"), ["field age"])
profiles_csv("csv-age-fraction", "age 30.5 for an int field", bad_row(age="30.5"), ["field age"])
profiles_csv("csv-income-nan", "annual income NaN", bad_row(annual_income="NaN"), ["field annual_income"])
profiles_csv("csv-income-inf", "annual income inf", bad_row(annual_income="inf"), ["field annual_income"])
profiles_csv("csv-income-negative", "annual income -5 below bounds", bad_row(annual_income="-5"), ["field annual_income"])
profiles_csv("csv-gender-outside-domain", "gender not in the domain", bad_row(gender="robot"), ["field gender"])
profiles_csv("csv-missing-customer-id", "empty customer ID", bad_row(customer_id=""), ["field customer_id"], secrets=[SECRET_MAIL, SECRET_NAME, SECRET_PHONE])
profiles_csv("csv-blank-customer-id", "customer ID of spaces", bad_row(customer_id="   "), ["field customer_id"], secrets=[SECRET_MAIL, SECRET_NAME, SECRET_PHONE])
profiles_csv("csv-missing-required-email", "empty e-mail (required)", bad_row(email=""), ["field email"], secrets=[SECRET_ID, SECRET_NAME, SECRET_PHONE])
profiles_csv("csv-unterminated-quote", "a quoted field never closed", bad_row(full_name='"Anna Geheimnis'), ["never closed"], raw="\n".join([HEADER, GOOD1, bad_row(full_name='"Anna Geheimnis')]) + "\n")
profiles_csv("csv-quote-in-unquoted", "a quote inside an unquoted field", bad_row(full_name='Anna "Geheimnis'), ["quote"])
profiles_csv("csv-char-after-quote", "text after a closing quote", bad_row(full_name='"Anna"x'), ["closing quote"], secrets=[SECRET_ID, SECRET_MAIL, SECRET_PHONE])
profiles_csv("csv-too-many-columns", "a record with 10 fields", bad_row() + ",extra", ["10 fields"])
profiles_csv("csv-too-few-columns", "a record with 8 fields", ",".join(bad_row().split(",")[:8]), ["8 fields"])
profiles_csv("csv-field-over-64k", "a full name of 70,000 bytes", bad_row(full_name="N" * 70000), ["field full_name"])
profiles_csv("csv-customer-id-over-1k", "a customer ID of 2,000 bytes", bad_row(customer_id="C" * 2000), ["field customer_id"], secrets=[SECRET_MAIL, SECRET_NAME, SECRET_PHONE, "C" * 100])
profiles_csv("csv-empty-file", "an empty file", None, ["empty"], line=None, raw="")
profiles_csv("csv-unknown-column", "a header column that is not in the schema", None, ["header column 10", '"favourite_colour"', "not a field"], line=1,
             raw=HEADER + ",favourite_colour\n" + GOOD1 + ",blue\n")
profiles_csv("csv-duplicate-column", "the email column twice", None, ["email", "twice"], line=1,
             raw=HEADER + ",email\n" + GOOD1 + ",x@example.net\n")
profiles_csv("csv-missing-id-column", "no customer_id column", None, ["customer_id", "missing"], line=1,
             raw=HEADER.replace("customer_id,", "") + "\n" + GOOD1.split(",", 1)[1] + "\n")
profiles_csv("csv-no-header", "a file without its header line: the first record is read as the header", None, ["header"], line=1,
             raw="\n".join([bad_row(), GOOD1]) + "\n")
profiles_csv("csv-crlf-line-number", "CRLF line ends; the bad record is on line 4", None, ["field age"], line=4,
             raw="\r\n".join([HEADER, GOOD1, GOOD2, bad_row(age="17")]) + "\r\n")
profiles_csv("csv-multiline-field-line-number", "a quoted name spanning two lines (a line feed: a control character) on line 2, before a bad record on line 4", None, ["field full_name", "U+000A"], line=2,
             raw="\n".join([HEADER, GOOD1.replace("Neue Person", '"Neue\nPerson"'), bad_row(birth_date="1980-13-01")]) + "\n")
cases["csv-invalid-utf8"] = ({"description": "invalid UTF-8 in the name", "args": ["ingest", "profiles", "$CASE/profiles.csv"], "expect_exit": 65,
                             "stderr_contains": ["profiles.csv:3", "field full_name", "UTF-8"], "must_not_contain": [SECRET_ID, SECRET_MAIL]},
                            {"profiles.csv": ("\n".join([HEADER, GOOD1, bad_row(full_name="Anna \udcff")]) + "\n").encode("utf-8", "surrogateescape")})


# ---- profile JSON Lines ------------------------------------------------------------------
def jrow(**over):
    row = dict(zip(HEADER.split(","), [SECRET_ID, SECRET_MAIL, SECRET_NAME, SECRET_PHONE, "1980-01-01", 46, "female", "DE", 10000]))
    row.update(over)
    return json.dumps(row, ensure_ascii=False)


JGOOD = json.dumps(dict(zip(HEADER.split(","), GOOD1.split(","))), ensure_ascii=False)


def profiles_jsonl(name, description, line_text, contains, line=2, raw=None, secrets=None, **extra):
    text = raw if raw is not None else JGOOD + "\n" + line_text + "\n"
    case(name, description, ["ingest", "profiles", "$CASE/profiles.jsonl"], 65,
         ["profiles.jsonl" + (":%d" % line if line else "")] + contains, {"profiles.jsonl": text},
         must_not_contain=secrets if secrets is not None else [SECRET_ID, SECRET_MAIL, SECRET_NAME, SECRET_PHONE], **extra)


profiles_jsonl("jsonl-not-json", "a line that is not JSON", '{"customer_id": "CX-SECRET-7", "email": ', ["JSON"])
profiles_jsonl("jsonl-array-line", "a line holding an array", '["CX-SECRET-7", 1]', ["object"])
profiles_jsonl("jsonl-unknown-key", "a key that is not a field", jrow(shoe_size=44), ["shoe_size"])
profiles_jsonl("jsonl-nested-object", "a nested object as a value", jrow(full_name={"first": "Anna"}), ["full_name", "nested"], secrets=[SECRET_ID, SECRET_MAIL, SECRET_PHONE])
profiles_jsonl("jsonl-impossible-date", "birth date 1999-02-29", jrow(birth_date="1999-02-29"), ["field birth_date"])
profiles_jsonl("jsonl-age-text", "age as a word", jrow(age="forty"), ["field age"])
profiles_jsonl("jsonl-age-bool", "age as true", jrow(age=True), ["field age"])
profiles_jsonl("jsonl-age-huge-exponent", "age 1e400", jrow(age=46).replace("46", "1e400"), [])
profiles_jsonl("jsonl-bool-as-number", "annual_income: true (a boolean for a float field)", jrow(annual_income=True), ["field annual_income"])
profiles_jsonl("jsonl-missing-customer-id", "no customer_id key", json.dumps({"email": SECRET_MAIL, "full_name": SECRET_NAME}), ["customer_id"], secrets=[SECRET_MAIL, SECRET_NAME])
profiles_jsonl("jsonl-empty-file", "an empty file", None, ["empty"], line=None, raw="")
profiles_jsonl("jsonl-line-number-after-blanks", "blank lines count: the bad record is on line 4", None, ["field gender"], line=4,
               raw=JGOOD + "\n\n   \n" + jrow(gender="none") + "\n")
cases["jsonl-invalid-utf8"] = ({"description": "invalid UTF-8 in a JSON line", "args": ["ingest", "profiles", "$CASE/profiles.jsonl"], "expect_exit": 65,
                               "stderr_contains": ["profiles.jsonl:2", "UTF-8"], "must_not_contain": [SECRET_ID, SECRET_MAIL]},
                              {"profiles.jsonl": (JGOOD + "\n" + jrow(full_name="Anna \udcfe") + "\n").encode("utf-8", "surrogateescape")})

# ---- events ----------------------------------------------------------------------------
EH = "customer_id,kind,item,value,time"
EGOOD = "C1,purchase,sku-1,19.99,2026-10-01T12:00:00Z"


def events(name, description, row, contains, line=3, raw=None, ext="csv", secrets=None, **extra):
    text = raw if raw is not None else "\n".join([EH, EGOOD, row]) + "\n"
    case(name, description, ["ingest", "events", "$CASE/events." + ext], 65,
         ["events.%s" % ext + (":%d" % line if line else "")] + contains, {"events." + ext: text},
         must_not_contain=secrets or [], **extra)


events("events-unknown-customer", "an event for a customer not in the store", "CX-NOBODY-9,purchase,sku-2,5,2026-10-01T12:00:00Z", ["field customer_id"], secrets=["CX-NOBODY-9"])
events("events-unknown-kind", "an event kind not in the schema", "C1,refund,sku-2,5,2026-10-01T12:00:00Z", ["field kind"])
events("events-value-out-of-bounds", "a rating of 9 (bounds 1..5)", "C1,rating,sku-2,9,2026-10-01T12:00:00Z", ["field value"])
events("events-value-not-number", "a purchase value that is text", "C1,purchase,sku-2,cheap,2026-10-01T12:00:00Z", ["field value"])
events("events-bad-time", "time 'yesterday'", "C1,purchase,sku-2,5,yesterday", ["field time"])
events("events-impossible-time", "time on 2026-02-30", "C1,purchase,sku-2,5,2026-02-30T10:00:00Z", ["field time"])
events("events-missing-item", "an empty item", "C1,purchase,,5,2026-10-01T12:00:00Z", ["field item"])
events("events-item-over-64k", "an item of 70,000 bytes", "C1,purchase," + "i" * 70000 + ",5,2026-10-01T12:00:00Z", ["field item"])
events("events-missing-column", "no time column", None, ["time", "missing"], line=1, raw="customer_id,kind,item,value\nC1,purchase,sku-1,5\n")
events("events-empty-file", "an empty events file", None, ["empty"], line=None, raw="")
events("events-jsonl-nested", "a JSON Lines event with a nested value", None, ["nested"], line=2, ext="jsonl",
       raw='{"customer_id":"C1","kind":"purchase","item":"sku-1","value":5,"time":"2026-10-01T12:00:00Z"}\n{"customer_id":"C1","kind":"purchase","item":["a"],"value":5,"time":"2026-10-01T12:00:00Z"}\n')
events("events-jsonl-unknown-customer", "a JSON Lines event for an unknown customer", None, ["field customer_id"], line=1, ext="jsonl",
       raw='{"customer_id":"CX-NOBODY-8","kind":"rating","item":"sku-1","value":4,"time":"2026-10-01T12:00:00+02:00"}\n', secrets=["CX-NOBODY-8"])

# ---- schema.yaml / policy.yaml ------------------------------------------------------------
REPO = os.path.abspath(os.path.join(ROOT, "..", "..", ".."))
SCHEMA = open(os.path.join(REPO, "policies", "schema.yaml")).read()
POLICY = open(os.path.join(REPO, "policies", "policy.yaml")).read()


CONFIG_LINES = {'schema-yaml-syntax': 7, 'schema-unknown-type': 13, 'schema-bounds-reversed': 10, 'schema-unknown-category': 7, 'schema-missing-category': 7, 'schema-duplicate-field': 7, 'schema-empty': 1, 'schema-version-text': 3, 'schema-empty-domain': 11, 'schema-unknown-key': 7, 'policy-yaml-syntax': 16, 'policy-bad-legal-basis': 18, 'policy-negative-epsilon': 9, 'policy-unknown-permission': 25, 'policy-unknown-category': 8, 'policy-bad-retention': 21, 'policy-empty': 1, 'policy-unknown-data-use': 6}


def config(name, description, filename, text, contains, args=None):
    case(name, description, args or ["get", "--subject", "C1", "--purpose", "customer_support", "--role", "support"], 78,
         ["%s:%d" % (filename, CONFIG_LINES[name])] + contains, {"replacement-" + filename: text}, policy_files={filename: "replacement-" + filename})


config("schema-yaml-syntax", "unclosed flow mapping", "schema.yaml", SCHEMA.replace("pii: true, lookup: true }", "pii: true, lookup: true", 1), [])
config("schema-unknown-type", "type money", "schema.yaml", SCHEMA.replace("type: float,    category: user.financial", "type: money,    category: user.financial"), ["annual_income"])
config("schema-bounds-reversed", "bounds [100, 18]", "schema.yaml", SCHEMA.replace("bounds: [18, 100]", "bounds: [100, 18]"), ["age"])
config("schema-unknown-category", "category user.favourite", "schema.yaml", SCHEMA.replace("category: user.name,", "category: user.favourite,"), ["full_name"])
config("schema-missing-category", "a field without category", "schema.yaml", SCHEMA.replace("category: user.name,                   ", ""), ["full_name", "category"])
config("schema-duplicate-field", "email declared twice", "schema.yaml", SCHEMA.replace("  full_name:", "  email:         { type: string, category: user.contact.email, pii: true }\n  full_name:", 1), ["email"])
config("schema-empty", "an empty schema file", "schema.yaml", "", [])
config("schema-version-text", "version: one", "schema.yaml", SCHEMA.replace("version: 1", "version: one"), ["version"])
config("schema-empty-domain", "a category field with an empty domain", "schema.yaml", SCHEMA.replace("domain: [female, male, other, unknown]", "domain: []"), ["gender"])
config("schema-unknown-key", "a field with an unknown key", "schema.yaml", SCHEMA.replace("pii: true }", "pii: true, encrypt: maybe }", 1), ["encrypt"])
config("policy-yaml-syntax", "a tab-indented line", "policy.yaml", POLICY.replace("  customer_support:", "\tcustomer_support:"), [])
config("policy-bad-legal-basis", "legal_basis: because", "policy.yaml", POLICY.replace("legal_basis: contract", "legal_basis: because"), ["legal_basis"])
config("policy-negative-epsilon", "dp_budget epsilon -1", "policy.yaml", POLICY.replace("epsilon: 4.0", "epsilon: -1"), ["epsilon"])
config("policy-unknown-permission", "a role with permission fly", "policy.yaml", POLICY.replace("support: [get]", "support: [get, fly]"), ["fly"])
config("policy-unknown-category", "may_read an unknown category", "policy.yaml", POLICY.replace("may_read: [user.demographic,", "may_read: [user.shoe_size,", 1), ["user.shoe_size"])
config("policy-bad-retention", "keep: forever", "policy.yaml", POLICY.replace("keep: 730d", "keep: forever"), ["keep"])
config("policy-empty", "an empty policy file", "policy.yaml", "", [])
config("policy-unknown-data-use", "data_use: mind_control", "policy.yaml", POLICY.replace("data_use: analytics.reporting", "data_use: mind_control"), ["data_use"])

case("schema-cr-duplicate-flow-key", "a CR-only line break, then a flow mapping with a duplicate key (fuzz finding)", ["init", "--store", "$TMP/new.sqlite"], 78,
     ["schema.yaml"], {"replacement-schema.yaml": "\r{y,y}\n"}, policy_files={"schema.yaml": "replacement-schema.yaml"}, no_store=True)
case("policy-cr-duplicate-flow-key", "policy.yaml: a CR-only line break, then a flow mapping with a duplicate key (fuzz finding)", ["init", "--store", "$TMP/new.sqlite"], 78,
     ["policy.yaml"], {"replacement-policy.yaml": "\r{y,y}\n"}, policy_files={"policy.yaml": "replacement-policy.yaml"}, no_store=True)

# Issue 17.7 and 17.8: schemas that would leak by mistake.
case("schema-email-not-pii", "an e-mail field declared without pii: true (would be stored in plaintext)", ["get", "--subject", "C1", "--purpose", "customer_support", "--role", "support"], 78,
     ["schema.yaml:6", "fields.email", "user.contact.email", "add pii: true"],
     {"replacement-schema.yaml": SCHEMA.replace("category: user.contact.email,          pii: true, lookup: true", "category: user.contact.email")},
     policy_files={"schema.yaml": "replacement-schema.yaml"})
case("schema-field-named-consent", "a field named consent (a key of the export answer)", ["get", "--subject", "C1", "--purpose", "customer_support", "--role", "support"], 78,
     ["schema.yaml:14", "fields.consent", "rename the field"],
     {"replacement-schema.yaml": SCHEMA.replace("events:\n", "  consent:       { type: bool,     category: user.privacy_preferences }\nevents:\n", 1)},
     policy_files={"schema.yaml": "replacement-schema.yaml"})

# ---- keyring files -----------------------------------------------------------------------
GOODSECRET = "6e8d7b2d891c49b95cb345e5857394ddb7a60d3aeba1961b4803ddfe13728fb9"


def keyring(obj):
    return json.dumps(obj, indent=2) + "\n"


def kr(name, description, text, contains, expect=78, mode=None, secrets=None):
    extra = {"keyring_file": "keyring.json", "must_not_contain": secrets or []}
    if mode:
        extra["keyring_mode"] = mode
    case(name, description, ["get", "--subject", "C1", "--purpose", "customer_support", "--role", "support"], expect,
         contains, {"keyring.json": text}, **extra)


BASE = {"format": "profilevault-keyring", "format_version": 1, "active": 1,
        "keys": [{"version": 1, "secret": GOODSECRET, "created": "2026-11-22T12:17:55Z", "retired": False}]}
kr("keyring-not-json", "a keyring that is not JSON", "format: yaml?\n", ["keyring.json"])
kr("keyring-world-readable", "mode 0644", keyring(BASE), ["keyring.json", "chmod 600"], mode="0644", secrets=[GOODSECRET])
kr("keyring-short-secret", "a 15-byte secret", keyring(dict(BASE, keys=[dict(BASE["keys"][0], secret="00112233445566778899aabbccddee")])), ["keyring.json", "secret"], secrets=["00112233445566778899aabbccddee"])
kr("keyring-active-missing", "active version 3 not in keys", keyring(dict(BASE, active=3)), ["keyring.json", "3"], secrets=[GOODSECRET])
kr("keyring-wrong-format", "format: something-else", keyring(dict(BASE, format="pgp")), ["keyring.json", "format"], secrets=[GOODSECRET])
kr("keyring-empty", "an empty keyring file", "", ["keyring.json"])
kr("keyring-duplicate-version", "version 1 twice", keyring(dict(BASE, keys=BASE["keys"] * 2)), ["keyring.json"], secrets=[GOODSECRET])
# Not the example secret (a copy of the example keyring draws a warning line first: below).
OTHERSECRET = "3c1f0b7e9a52d8640e2f7a19b6c3d5e8f0a1b2c3d4e5f60718293a4b5c6d7e8f"
kr("keyring-other-store", "a well-formed keyring that is not the store's", keyring(dict(BASE, keys=[dict(BASE["keys"][0], secret=OTHERSECRET)])), ["keyring"], expect=1, secrets=[OTHERSECRET])
case("keyring-example-serve", "serve with a copy of the public example keyring", ["serve", "--listen", "127.0.0.1:0", "--tokens", "$TMP/tokens.json"], 78,
     ["keyring.json", "the example keyring is public: generate one with profilectl keys generate"], {"keyring.json": keyring(BASE)},
     keyring_file="keyring.json", must_not_contain=[GOODSECRET])

# ---- training jobs: items_from names a declared catalog, never a file ----------------------
JOB = "job: steal\npurpose: model_training\nmodel: recommender\nevents: purchase\nitems_from: %s\nepsilon: 1\n"
case("job-items-from-keyring-path", "items_from naming a file (the keyring) instead of a declared catalog", ["train", "$CASE/job.yaml", "--role", "trainer"], 65,
     ["job.yaml:5", "items_from", "not a path"], {"job.yaml": JOB % "../../keyring.json"})
case("job-items-from-undeclared", "items_from naming a catalog the policy does not declare", ["train", "$CASE/job.yaml", "--role", "trainer"], 65,
     ["job.yaml", "items_from", "not a catalog declared in the policy"], {"job.yaml": JOB % "keyring"})
_cat = POLICY.split("\n").index("  products: catalogs/products.tsv") + 1
for _name, _path, _why in [("policy-catalog-dotdot", "../keys-example/keyring.json", "leaves the policy directory"),
                           ("policy-catalog-absolute", "/etc/passwd", "absolute path")]:
    case(_name, "a declared catalog path outside the policy directory (%s)" % _path, ["budget", "status", "--role", "trainer"], 78,
         ["policy.yaml:%d" % _cat, "catalogs.products", _why],
         {"replacement-policy.yaml": POLICY.replace("  products: catalogs/products.tsv", "  products: " + _path)},
         policy_files={"policy.yaml": "replacement-policy.yaml"})
case("keyring-missing-file", "the keyring path does not exist", ["get", "--subject", "C1", "--purpose", "customer_support", "--role", "support", "--keys", "$TMP/nope.json"], 78, ["nope.json"])
case("keyring-is-directory", "the keyring path is a directory", ["get", "--subject", "C1", "--purpose", "customer_support", "--role", "support", "--keys", "$TMP"], 78, ["regular file"])

# ---- CLI flags and commands -----------------------------------------------------------------
case("cli-unknown-flag", "an unknown flag", ["status", "--frobnicate"], 64, ["frobnicate"])
case("cli-batch-size-zero", "--batch-size 0", ["ingest", "profiles", "$CASE/p.csv", "--batch-size", "0"], 64, ["batch-size"], {"p.csv": HEADER + "\n" + GOOD1 + "\n"})
case("cli-batch-size-text", "--batch-size lots", ["ingest", "profiles", "$CASE/p.csv", "--batch-size", "lots"], 64, ["batch-size"], {"p.csv": HEADER + "\n" + GOOD1 + "\n"})
case("cli-delimiter-two-chars", "--delimiter ';;' (one character only)", ["ingest", "profiles", "$CASE/p.csv", "--delimiter", ";;"], 64, ["--delimiter"], {"p.csv": HEADER + "\n" + GOOD1 + "\n"})
case("cli-delimiter-quote", "--delimiter '\"' (the quote character)", ["ingest", "profiles", "$CASE/p.csv", "--delimiter", "\""], 64, ["--delimiter"], {"p.csv": HEADER + "\n" + GOOD1 + "\n"})
case("cli-format-unknown", "--format xml", ["ingest", "profiles", "$CASE/p.csv", "--format", "xml"], 64, ["format"], {"p.csv": HEADER + "\n" + GOOD1 + "\n"})
case("cli-rejects-without-skip", "--rejects without --skip-invalid", ["ingest", "profiles", "$CASE/p.csv", "--rejects", "$TMP/r.csv"], 64, ["--skip-invalid"], {"p.csv": HEADER + "\n" + GOOD1 + "\n"})
case("cli-get-no-purpose", "get without --purpose", ["get", "--subject", "C1", "--role", "support"], 64, ["purpose"])
case("cli-ingest-missing-file", "ingest a file that does not exist", ["ingest", "profiles", "$TMP/absent.csv"], 66, ["absent.csv"])
case("cli-ingest-directory", "ingest a directory", ["ingest", "profiles", "$TMP"], 66, ["directory"])

# ---- output files (issue 17.1): never the keyring, the store or its WAL, even with --force (exit 73)
_mixed = {"p.csv": HEADER + "\n" + GOOD1 + "\n" + bad_row(birth_date="2000-02-30") + "\n"}
case("output-rejects-onto-keyring", "ingest --skip-invalid --rejects $KEYS --force: would replace the keyring", ["ingest", "profiles", "$CASE/p.csv", "--skip-invalid", "--rejects", "$KEYS", "--force"], 73, ["keyring.json", "the keyring", "even with --force"], _mixed, must_not_contain=[SECRET_ID, SECRET_MAIL, SECRET_NAME, SECRET_PHONE])
case("output-audit-export-onto-store", "audit export --out $STORE --force: would destroy the store", ["audit", "export", "--out", "$STORE", "--force", "--role", "auditor"], 73, ["store.sqlite", "the store"])
case("output-export-onto-wal", "export --out $STORE-wal --force: the store's write-ahead log", ["export", "--subject", "C1", "--out", "$STORE-wal", "--force", "--role", "privacy_officer"], 73, ["store.sqlite-wal"])
case("output-tokens-onto-keyring", "tokens add --tokens $KEYS: the tokens file would replace the keyring", ["tokens", "add", "--tokens", "$KEYS", "--actor", "a", "--role", "support"], 73, ["keyring.json", "the keyring"])
case("output-public-key-onto-directory", "audit public-key --out $TMP: an existing directory", ["audit", "public-key", "--out", "$TMP"], 73, ["it is a directory"])
case("cli-get-unknown-subject", "get a subject that is not stored", ["get", "--subject", "CX-NOBODY-1", "--purpose", "customer_support", "--role", "support"], 66, ["no subject"], must_not_contain=["CX-NOBODY-1"])
case("cli-find-no-match", "find an e-mail nobody has", ["find", "--email", "nobody.here@example.org", "--role", "support"], 66, ["no subject"], must_not_contain=["nobody.here@example.org"])
case("cli-unknown-role", "--role nobody", ["get", "--subject", "C1", "--purpose", "customer_support", "--role", "nobody"], 77, ["nobody"])
case("cli-role-without-permission", "operator may not get", ["get", "--subject", "C1", "--purpose", "customer_support", "--role", "operator"], 77, ["get"])
case("cli-purpose-no-pii", "get for analytics (no may_read_pii)", ["get", "--subject", "C1", "--purpose", "analytics", "--role", "support"], 77, ["analytics"])
case("cli-unknown-purpose", "get for an undeclared purpose", ["get", "--subject", "C1", "--purpose", "curiosity", "--role", "support"], 77, ["curiosity"])
case("cli-no-store", "no --store and no PROFILEVAULT_STORE", ["status"], 64, ["store"], env={"PROFILEVAULT_STORE": ""})
case("cli-init-existing-store", "init over an existing store", ["init"], 78, ["exists"])
case("cli-init-bad-schema", "init with a broken schema leaves no store", ["init", "--store", "$TMP/new.sqlite"], 78, ["schema.yaml"],
     {"replacement-schema.yaml": SCHEMA.replace("bounds: [18, 100]", "bounds: [100, 18]")}, policy_files={"schema.yaml": "replacement-schema.yaml"}, no_store=True)
case("cli-keys-generate-existing", "keys generate over an existing file", ["keys", "generate", "--out", "$KEYS"], 73, ["exists"])
case("cli-status-missing-store", "status of a store that does not exist", ["status", "--store", "$TMP/absent.sqlite"], 66, ["absent.sqlite"], no_store_path="$TMP/absent.sqlite")
case("cli-audit-verify-missing-file", "audit verify --file of a missing export", ["audit", "verify", "--file", "$TMP/none.jsonl", "--public-key", "$CASE/pub.pem"], 66, ["none.jsonl"], {"pub.pem": "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n"})
case("cli-audit-verify-bad-pem", "audit verify with a public key that is not PEM", ["audit", "verify", "--file", "$CASE/e.jsonl", "--public-key", "$CASE/pub.pem"], 78, ["pub.pem"], {"e.jsonl": "{}\n", "pub.pem": "not a key\n"})
case("audit-export-altered", "an export whose line is not JSON", ["audit", "verify", "--file", "$CASE/e.jsonl", "--public-key", "$CASE/pub.pem"], 1, ["line 1"],
     {"e.jsonl": "{not json\n", "pub.pem": "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n"})
case("audit-export-sequence-overflow", "an entry with sequence Int64.min", ["audit", "verify", "--file", "$CASE/e.jsonl", "--public-key", "$CASE/pub.pem"], 1, [],
     {"e.jsonl": '{"metadata.sequence":-9223372036854775808,"prev_hash":"00","hash":"00"}\n', "pub.pem": "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n"})
case("audit-export-head-overflow", "a head with first_sequence Int64.min and a bad signature", ["audit", "verify", "--file", "$CASE/e.jsonl", "--public-key", "$CASE/pub.pem"], 1, [],
     {"e.jsonl": '{"head":{"first_sequence":-9223372036854775808,"last_sequence":0,"previous":"","hash":"","signature":""}}\n', "pub.pem": "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n"})

import hashlib
_e = '{"metadata.sequence":9223372036854775807}'
_h = hashlib.sha256(bytes(32) + _e.encode()).hexdigest()
case("audit-export-sequence-max", "a correctly hashed entry with sequence Int64.max, then another entry", ["audit", "verify", "--file", "$CASE/e.jsonl", "--public-key", "$CASE/pub.pem"], 1, [],
     {"e.jsonl": '{"metadata.sequence":9223372036854775807,"prev_hash":"%s","hash":"%s"}\n{"metadata.sequence":1,"prev_hash":"%s","hash":"%s"}\n' % ("00" * 32, _h, _h, _h),
      "pub.pem": "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n"})

# ---- control characters, unknown commands (issue 17.6) ------------------------------------
profiles_csv("csv-nul-in-email", "an e-mail with a NUL byte", bad_row(email="anna.secret\0@example.org"), ["field email", "U+0000"],
             secrets=[SECRET_ID, "anna.secret", SECRET_NAME, SECRET_PHONE])
profiles_csv("csv-escape-in-name", "a name with an ANSI escape (ESC [2J)", bad_row(full_name="Anna \x1b[2JGeheimnis"), ["field full_name", "U+001B"],
             secrets=[SECRET_ID, SECRET_MAIL, "Geheimnis", SECRET_PHONE])
profiles_jsonl("jsonl-nul-in-name", "an escaped NUL (\\u0000) in a JSON name", jrow(full_name="Anna\0Geheimnis"), ["field full_name", "U+0000"],
               secrets=[SECRET_ID, SECRET_MAIL, "Geheimnis", SECRET_PHONE])
profiles_jsonl("jsonl-newline-in-customer-id", "a customer ID with a line feed (a forged second line)", jrow(customer_id="CX-SECRET-7\nerror: forged"),
               ["field customer_id", "U+000A"], secrets=["CX-SECRET-7", "forged", SECRET_MAIL, SECRET_NAME, SECRET_PHONE])
events("events-nul-in-item", "an event item with a NUL byte", 'C1,purchase,"sku\0secret",5,2026-10-01T12:00:00Z', ["field item", "U+0000"], secrets=["secret"])
case("cli-unknown-command", "a command that does not exist, followed by --json", ["frobnicate", "--json"], 64, ["unknown command 'frobnicate'"])
case("cli-unknown-subcommand", "a subcommand of audit that does not exist", ["audit", "frobnicate"], 64, ["unknown command 'frobnicate' of audit"])

for d in os.listdir(ROOT):
    p = os.path.join(ROOT, d)
    if os.path.isdir(p) and os.path.exists(os.path.join(p, "case.json")):
        shutil.rmtree(p)
for name, (c, files) in sorted(cases.items()):
    d = os.path.join(ROOT, name)
    os.makedirs(d)
    for fn, content in files.items():
        with open(os.path.join(d, fn), "wb") as f:
            f.write(content if isinstance(content, bytes) else content.encode("utf-8"))
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump(c, f, indent=2, ensure_ascii=False)
        f.write("\n")
print("%d cases" % len(cases))
