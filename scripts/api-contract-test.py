#!/usr/bin/env python3
"""The OpenAPI document is the contract: check the live service against it (issue 20, part 1).

Run through scripts/api-contract-test.sh, which makes the pinned virtual environment
(scripts/api-contract-requirements.txt) and runs this with its python:

    PROFILECTL=.build/debug/profilectl scripts/api-contract-test.sh [--max-examples N] [--seed N] [--postgres]

With --postgres (through scripts/with-postgres.sh) the store is a fresh PostgreSQL database
(served by a login role that is only a member of the service role), else a SQLite file.

What it does:
  1. validates docs/openapi.yaml with openapi-spec-validator (OpenAPI 3.1), and refuses a
     mapping key without a value anywhere in it (the mark of an unquoted `a: b` in a flow
     mapping, which YAML splits into a stray key the validator does not see inside a schema);
     checks that every operation names its permission (`x-permission`) and that every
     authenticated operation documents 401, 403, 429, 500 and 503;
  2. makes a fresh SQLite store in a temporary directory with the example keyring (a 0600
     copy), 40 profiles, their purchase events and consent, a recommender trained by the CLI,
     an open request of the register, and one token per role of the default policy
     (`profilectl tokens add`);
  3. starts `profilectl serve` on 127.0.0.1 (a free port) and runs schemathesis against it
     once per role (and once without a token): every operation, a bounded number of generated
     requests per operation with a fixed seed, one worker, the checks not_a_server_error,
     status_code_conformance, content_type_conformance, response_schema_conformance and
     response_headers_conformance. Destructive operations (erasure, retention, key rotation)
     run with the privacy_officer token, which comes last but for the no-token run, so
     earlier runs always meet the same store;
  4. checks that the server is still up and healthy, and that `profilectl audit verify`
     accepts the audit log all those requests wrote.
Any failure exits non-zero. The run copy of the document only adds `example`s that name the
live store's data (a subject, a request id, the trained model), so generated requests also
reach the success paths.
"""
import argparse
import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import yaml
from openapi_spec_validator import validate as validate_spec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "openapi.yaml")
P = os.path.abspath(os.environ.get("PROFILECTL", os.path.join(REPO, ".build/debug/profilectl")))
VENV_BIN = os.path.dirname(os.path.abspath(sys.executable))
SCHEMATHESIS = os.path.join(VENV_BIN, "schemathesis")
# Destructive routes last (privacy_officer); the no-token run after it (failed authentications
# may be rate-limited per address, which must not spoil the runs with a token).
ROLES = ["auditor", "support", "operator", "trainer", "app", "privacy_officer"]
CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance", "unsupported_method",
          "allow_header_conformance", "negative_data_rejection"]
CHECKS = os.environ.get("CONTRACT_CHECKS", ",".join(CHECKS)).split(",")
AUTH_STATUSES = ["401", "403", "429", "500", "503"]


def fail(msg):
    print(f"api-contract-test: FAIL: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def say(msg):
    print(f"api-contract-test: {msg}", flush=True)


# 1. The document.

def stray_keys(node, path="$"):
    """Paths of mapping keys whose value is null: an unquoted `text: more` in a flow mapping."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            if v is None:
                out.append(f"{path}.{k}")
            out += stray_keys(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += stray_keys(v, f"{path}[{i}]")
    return out


def check_document():
    with open(DOC, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    try:
        validate_spec(doc)
    except Exception as e:  # the validator's own error types vary between versions
        fail(f"docs/openapi.yaml does not validate: {str(e).splitlines()[0]}")
    if not str(doc.get("openapi", "")).startswith("3.1"):
        fail("docs/openapi.yaml: not OpenAPI 3.1")
    stray = stray_keys(doc)
    if stray:
        fail(f"docs/openapi.yaml: keys without a value (an unquoted colon?): {', '.join(stray[:5])}")
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            where = f"{method.upper()} {path}"
            if "x-permission" not in op:
                fail(f"docs/openapi.yaml: {where} names no x-permission")
            if op.get("security", doc.get("security")):
                missing = [s for s in AUTH_STATUSES if s not in op["responses"]]
                if missing:
                    fail(f"docs/openapi.yaml: {where} needs a token but does not document {', '.join(missing)}")
    say(f"docs/openapi.yaml validates (OpenAPI {doc['openapi']}, {len(doc['paths'])} paths)")
    return doc


# 2. The store.

def cli(args, env, check=True, stdin=None):
    r = subprocess.run([P] + args, capture_output=True, text=True, env=env, input=stdin)
    if check and r.returncode != 0:
        fail(f"profilectl {' '.join(args[:3])}: exit {r.returncode}: {r.stderr.strip()[:400]}")
    return r


def postgres_store():
    """A fresh database on the test server (scripts/with-postgres.sh), its service role and a
    login role for `serve` (which refuses to run as the owner): (owner env, node env, cleanup)."""
    import re
    import secrets
    base = os.environ.get("PROFILEVAULT_TEST_POSTGRES")
    if not base:
        fail("--postgres: PROFILEVAULT_TEST_POSTGRES is not set (run through scripts/with-postgres.sh)")
    m = re.match(r"^postgres(?:ql)?://([^@/]+)@([^/]+)/([^?]+)(\?.*)?$", base)
    if not m:
        fail("--postgres: cannot read PROFILEVAULT_TEST_POSTGRES")
    admin, hostport, params = m.group(1), m.group(2), m.group(4) or "?sslmode=disable"
    password = os.environ.get("PGPASSWORD", "")
    db, service, node = "pvcontract_" + secrets.token_hex(4), "pvcontract_svc_" + secrets.token_hex(3), "pvcontract_node_" + secrets.token_hex(3)
    node_password = secrets.token_hex(16)
    psql = "psql"
    if os.path.isdir("/usr/lib/postgresql"):
        for d in sorted((f"/usr/lib/postgresql/{v}/bin" for v in os.listdir("/usr/lib/postgresql")), reverse=True):
            if os.access(os.path.join(d, "psql"), os.X_OK):
                psql = os.path.join(d, "psql")
                break

    def sql(statement):
        r = subprocess.run([psql, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", base, "-c", statement],
                           capture_output=True, text=True, env={**os.environ, "PGPASSWORD": password})
        if r.returncode != 0:
            fail(f"psql: {statement[:60]}: {r.stderr.strip()[:300]}")

    sql(f"CREATE DATABASE {db}")
    owner = {"PROFILEVAULT_STORE": f"postgres://{admin}@{hostport}/{db}{params}", "PGPASSWORD": password}
    nodeenv = {"PROFILEVAULT_STORE": f"postgres://{node}@{hostport}/{db}{params}", "PGPASSWORD": node_password}

    def after_init():
        sql(f"CREATE ROLE {node} LOGIN PASSWORD '{node_password}'")
        sql(f"GRANT {service} TO {node}")

    def cleanup():
        for statement in (f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", f"DROP ROLE IF EXISTS {node}", f"DROP ROLE IF EXISTS {service}"):
            subprocess.run([psql, "-X", "-q", "-d", base, "-c", statement], capture_output=True,
                           env={**os.environ, "PGPASSWORD": password})
    return owner, nodeenv, service, after_init, cleanup


# What make_store trained besides the recommender (the scoring model), for run_copy's examples.
LIVE = {}


def make_store(work, postgres=None):
    keys = os.path.join(work, "keyring.json")
    shutil.copyfile(os.path.join(REPO, "keys-example", "keyring.json"), keys)
    os.chmod(keys, 0o600)
    env = {**os.environ, "PROFILEVAULT_STORE": os.path.join(work, "store.sqlite"), "PROFILEVAULT_KEYS": keys,
           "PROFILEVAULT_POLICY": os.path.join(REPO, "policies"), "PROFILEVAULT_LOG_LEVEL": "error"}
    opts = ["--allow-example-keys"]
    if postgres:
        owner, nodeenv, service, after_init, _ = postgres
        cli(["init", "--service-role", service] + opts, {**env, **owner})
        after_init()
        env = {**env, **nodeenv}
    else:
        cli(["init"] + opts, env)
    profiles = os.path.join(work, "profiles.jsonl")
    events = os.path.join(work, "events.jsonl")
    ids = [f"C{i}" for i in range(1, 41)]
    countries = ["DE", "FR", "GB", "US", "other"]
    with open(profiles, "w") as f:
        for i, cid in enumerate(ids):
            f.write(json.dumps({"customer_id": cid, "email": f"person{i}@example.com", "full_name": f"Person {i}",
                                "phone": f"+49 30 {1000 + i}", "birth_date": "1980-01-02", "age": 20 + i,
                                "gender": ["female", "male", "other"][i % 3], "country": countries[i % 5],
                                "annual_income": 30000 + 1000 * i}) + "\n")
    with open(events, "w") as f:
        for i, cid in enumerate(ids):
            for j in range(6):
                f.write(json.dumps({"customer_id": cid, "kind": "purchase", "item": f"SKU-{(i * 7 + j * 3) % 20:04d}",
                                    "value": 10 + j, "time": f"2026-10-{1 + j:02d}T12:00:00Z"}) + "\n")
    cli(["ingest", "profiles", profiles, "--format", "jsonl", "--role", "operator"] + opts, env)
    cli(["ingest", "events", events, "--format", "jsonl", "--role", "operator"] + opts, env)
    everyone = os.path.join(work, "everyone.txt")
    with open(everyone, "w") as f:
        f.write("\n".join(ids) + "\n")
    for purpose in ("analytics", "model_training"):
        cli(["consent", "grant", "--subjects", everyone, "--purpose", purpose, "--source", "contract-test",
             "--role", "privacy_officer"] + opts, env)
    job = os.path.join(work, "reco.yaml")
    with open(job, "w") as f:
        f.write("job: contract-reco\npurpose: model_training\nmodel: recommender\nevents: purchase\n"
                "items_from: products\nepsilon: 1.0\n")
    model = json.loads(cli(["train", job, "--role", "trainer", "--json"] + opts, env).stdout)
    # A model POST /v1/scores scores (issue 24): a linear regression on a derived target.
    score_job = os.path.join(work, "score.yaml")
    with open(score_job, "w") as f:
        f.write("job: contract-score\npurpose: model_training\nmodel: linear_regression\n"
                "derived:\n  spend: { events: purchase, aggregate: sum, bounds: [0, 100] }\n"
                "features: [age, annual_income]\ntarget: spend\nepsilon: 1.0\n")
    LIVE["score_model"] = json.loads(cli(["train", score_job, "--role", "trainer", "--json"] + opts, env).stdout)
    opened = json.loads(cli(["requests", "open", "--type", "access", "--subject", "C2", "--channel", "web",
                             "--role", "privacy_officer", "--json"] + opts, env).stdout)
    tokens_file = os.path.join(work, "tokens.json")
    tokens = {}
    for role in ROLES:
        out = cli(["tokens", "add", "--tokens", tokens_file, "--actor", f"contract-{role}", "--role", role, "--json"] + opts, env)
        tokens[role] = json.loads(out.stdout)["token"]
    return env, tokens_file, tokens, model, opened["request"]


# 3. The service and schemathesis.

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, token=None):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def start_server(env, tokens_file, work):
    for _ in range(5):
        port = free_port()
        log = open(os.path.join(work, f"serve-{port}.log"), "w")
        proc = subprocess.Popen([P, "serve", "--listen", f"127.0.0.1:{port}", "--tokens", tokens_file,
                                 "--allow-example-keys", "--log-level", "warning"], env=env, stdout=log, stderr=log)
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            try:
                if get(base + "/healthz")[0] == 200:
                    return proc, base, log.name
            except OSError:
                pass
            time.sleep(0.2)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    fail("profilectl serve did not come up (see its log in the work directory)")


def run_copy(doc, model, request_id, work):
    """The document with examples that name the live store's data."""
    d = copy.deepcopy(doc)
    d["components"]["parameters"]["CustomerID"]["example"] = "C1"
    d["components"]["parameters"]["RegisterRequestID"]["example"] = request_id
    reco = d["paths"]["/v1/recommendations"]["post"]["requestBody"]["content"]["application/json"]
    reco["example"] = {"model": model, "subject": "C3", "top": 5}
    scores = d["paths"]["/v1/scores"]["post"]["requestBody"]["content"]["application/json"]
    scores["example"] = {"model": LIVE["score_model"], "subject": "C3", "top": 5}
    query = d["paths"]["/v1/queries"]["post"]["requestBody"]["content"]["application/json"]
    query["example"] = {"kind": "count", "purpose": "analytics", "epsilon": 0.01, "where": "country=DE"}
    def body_example(path, method, example):
        d["paths"][path][method]["requestBody"]["content"]["application/json"]["example"] = example
    body_example("/v1/requests", "post", {"type": "access", "customer_id": "C5", "channel": "email"})
    body_example("/v1/subjects/{customer_id}/consent", "post", {"purpose": "analytics", "granted": True, "source": "web"})
    body_example("/v1/subjects/{customer_id}/rectification", "post", {"set": {"full_name": "Person One"}})
    body_example("/v1/consent/import", "post", {"rows": [{"customer_id": "C6", "purpose": "analytics", "granted": True,
                                                          "time": "2026-01-01T00:00:00Z", "source": "paper"}]})
    body_example("/v1/profiles", "post", [{"customer_id": "C41", "email": "new@example.com", "age": 30, "country": "DE"}])
    body_example("/v1/events", "post", [{"customer_id": "C7", "kind": "purchase", "item": "SKU-0001", "value": 3,
                                         "time": "2026-10-10T10:00:00Z"}])
    body_example("/v1/jobs", "post", {"job": "km", "purpose": "model_training", "model": "kmeans", "features": ["age"],
                                      "params": {"k": 2}, "epsilon": 0.5})
    body_example("/v1/retention", "post", {"dry_run": True, "list": True})
    find = d["paths"]["/v1/find"]["get"]["parameters"]
    for p in find:
        if p["name"] == "value":
            p["example"] = "person4@example.com"
    path = os.path.join(work, "openapi-run.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(d, f, sort_keys=False)
    return path


def schemathesis(spec, base, token, label, args, work):
    cmd = [SCHEMATHESIS, "run", spec, "--url", base, "--checks", ",".join(CHECKS),
           "--max-examples", str(args.max_examples), "--seed", str(args.seed), "--workers", "1",
           "--phases", args.phases, "--request-timeout", "60", "--suppress-health-check", "all",
           "--report", "junit", "--report-junit-path", os.path.join(work, f"junit-{label}.xml")]
    if token:
        cmd += ["--header", f"Authorization: Bearer {token}"]
    say(f"schemathesis as {label} ...")
    start = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=work,
                       env={**os.environ, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"})
    out = r.stdout + r.stderr
    with open(os.path.join(work, f"schemathesis-{label}.txt"), "w") as f:
        f.write(out)
    summary = [l.strip() for l in out.splitlines() if " generated, " in l or l.strip().startswith(("Failures:", "Errors:"))]
    say(f"  {label}: exit {r.returncode} in {time.time() - start:.0f} s; " + "; ".join(summary))
    if r.returncode != 0:
        print(out[-20000:], file=sys.stderr)
        return False
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-examples", type=int, default=int(os.environ.get("CONTRACT_MAX_EXAMPLES", "12")))
    ap.add_argument("--seed", type=int, default=int(os.environ.get("CONTRACT_SEED", "20")))
    ap.add_argument("--phases", default=os.environ.get("CONTRACT_PHASES", "examples,coverage,fuzzing"))
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--postgres", action="store_true",
                    help="the store on the PostgreSQL server of scripts/with-postgres.sh instead of a SQLite file")
    args = ap.parse_args()
    if not os.access(P, os.X_OK):
        fail(f"no executable at {P} (build first: swift build)")
    doc = check_document()
    work = tempfile.mkdtemp(prefix="pv-contract.")
    proc = None
    ok = True
    postgres = postgres_store() if args.postgres else None
    try:
        env, tokens_file, tokens, model, request_id = make_store(work, postgres)
        say(f"{'PostgreSQL' if postgres else 'SQLite'} store ready ({work}): 40 subjects, a recommender, request {request_id}, tokens for {', '.join(ROLES)}")
        proc, base, log = start_server(env, tokens_file, work)
        spec = run_copy(doc, model, request_id, work)
        for role in ROLES + [None]:
            ok = schemathesis(spec, base, tokens.get(role), role or "no-token", args, work) and ok
            if proc.poll() is not None:
                fail(f"profilectl serve exited ({proc.returncode}) during the {role or 'no-token'} run; log: {open(log).read()[-2000:]}")
        status, body = get(base + "/healthz")
        if status != 200:
            fail(f"/healthz answers {status} after the run: {body[:200]!r}")
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            fail("profilectl serve did not stop within 30 s of SIGTERM")
        r = cli(["audit", "verify", "--role", "auditor", "--allow-example-keys"], env, check=False)
        if r.returncode != 0:
            fail(f"audit verify after the run: exit {r.returncode}: {r.stderr.strip()[:400]}")
        say("the audit log of the run verifies")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        if postgres:
            postgres[4]()
        if args.keep or not ok:
            say(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if not ok:
        fail("schemathesis found failures (above; reports in the work directory)")
    say("OK")


if __name__ == "__main__":
    main()
