#!/usr/bin/env python3
"""Three `profilectl serve` nodes against one PostgreSQL store (issue 18, part 4).

Run it through scripts/with-postgres.sh (which starts a private cluster and exports
PROFILEVAULT_TEST_POSTGRES and PGPASSWORD for its superuser):

    scripts/with-postgres.sh env PROFILECTL=.build/debug/profilectl PVBENCH=.build/debug/pvbench \
        python3 scripts/postgres-nodes-test.py

What it checks, each through the HTTP routes a user calls:
  1. `profilectl init --store postgres://...` as the owner creates the store and the service
     role; the nodes log in as a separate role that is only a member of it;
  2. two nodes ingest different customers at once: both bodies land, nothing is lost; a
     refused body names the record and field (`location`); a command prints nothing on
     stderr but its errors;
  3. 30 DP count queries race over the three nodes for a budget that fits exactly 10
     (analytics: 4.0; 0.39 each): exactly 10 answer 200, the other 20 are refused, and the
     ledger shows 10 charges;
  4. an erasure on node 1 is refused by nodes 2 and 3 on their next read (404);
  5. a node killed (SIGKILL) while it ingests a large body loses nothing committed: the body
     is all or nothing, every customer ingested before is still there;
  4a. `keys rotate` on the CLI while the nodes run: they read at once and adopt the new version
     on their own (keys.adopt), wrapping new keys under it;
  4b. a token revoked with `tokens revoke` is refused (401) by every node on its next request,
     other tokens go on, the refusals are audited (no token material); after 10 failed
     authentications from one address a node answers 429 with Retry-After;
  6. the cluster has ONE audit chain, and it verifies (`profilectl audit verify`), holding
     the entries of all three nodes.
Standard library only. Exits non-zero with a message on the first failure.
"""
import csv
import io
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
P = os.path.abspath(os.environ.get("PROFILECTL", os.path.join(REPO, ".build/debug/profilectl")))
G = os.path.abspath(os.environ.get("PVBENCH", os.path.join(REPO, ".build/debug/pvbench")))
BASE = os.environ.get("PROFILEVAULT_TEST_POSTGRES")
ADMIN_PASSWORD = os.environ.get("PGPASSWORD", "")


def fail(msg):
    print(f"postgres-nodes-test: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def say(msg):
    print(f"postgres-nodes-test: {msg}", flush=True)


if not BASE:
    fail("PROFILEVAULT_TEST_POSTGRES is not set: run this through scripts/with-postgres.sh")
for exe in (P, G):
    if not os.access(exe, os.X_OK):
        fail(f"no executable at {exe} (build first: swift build)")

m = re.match(r"^postgres(?:ql)?://([^@/]+)@([^/]+)/([^?]+)(\?.*)?$", BASE)
if not m:
    fail(f"cannot read the test server's location {BASE}")
admin_user, hostport, _, params = m.group(1), m.group(2), m.group(3), m.group(4) or "?sslmode=disable"
DB = "pvnodes_" + secrets.token_hex(4)
SERVICE = "pvnodes_svc_" + secrets.token_hex(3)
NODE = "pvnodes_node_" + secrets.token_hex(3)
NODE_PASSWORD = secrets.token_hex(16)
OWNER_URL = f"postgres://{admin_user}@{hostport}/{DB}{params}"
NODE_URL = f"postgres://{NODE}@{hostport}/{DB}{params}"


def psql_path():
    for d in sorted((f"/usr/lib/postgresql/{v}/bin" for v in os.listdir("/usr/lib/postgresql")) if os.path.isdir("/usr/lib/postgresql") else [], reverse=True):
        if os.access(os.path.join(d, "psql"), os.X_OK):
            return os.path.join(d, "psql")
    return "psql"


PSQL = psql_path()


def sql(statement, database=None):
    url = BASE if database is None else f"postgres://{admin_user}@{hostport}/{database}{params}"
    r = subprocess.run([PSQL, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", statement],
                       capture_output=True, text=True, env={**os.environ, "PGPASSWORD": ADMIN_PASSWORD})
    if r.returncode != 0:
        fail(f"psql: {statement[:60]}...: {r.stderr.strip()}")
    return r.stdout.strip()


work = tempfile.mkdtemp(prefix="pv-nodes.")
os.chdir(work)
KEYS = os.path.join(work, "k.json")
TOKENS = os.path.join(work, "tokens.json")
POLICY = os.path.join(REPO, "policies")
base_env = {**os.environ, "PROFILEVAULT_KEYS": KEYS, "PROFILEVAULT_POLICY": POLICY}
node_env = {**base_env, "PROFILEVAULT_STORE": NODE_URL, "PGPASSWORD": NODE_PASSWORD}
owner_env = {**base_env, "PROFILEVAULT_STORE": OWNER_URL, "PGPASSWORD": ADMIN_PASSWORD}


def cli(args, env, check=True):
    r = subprocess.run([P] + args, capture_output=True, text=True, env=env)
    if check and r.returncode != 0:
        fail(f"profilectl {' '.join(args[:3])}: exit {r.returncode}: {r.stderr.strip()[:400]}")
    return r


procs = []


def cleanup():
    for p in procs:
        if p.poll() is None:
            p.kill()
    try:
        sql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        sql(f"DROP ROLE IF EXISTS {NODE}")
        sql(f"DROP ROLE IF EXISTS {SERVICE}")
    except SystemExit:
        pass


try:
    # 1. The store, its roles, the nodes' login role.
    sql(f"CREATE DATABASE {DB}")
    cli(["keys", "generate", "--out", KEYS], base_env)
    cli(["init", "--service-role", SERVICE], owner_env)
    sql(f"CREATE ROLE {NODE} LOGIN PASSWORD '{NODE_PASSWORD}'")
    sql(f"GRANT {SERVICE} TO {NODE}")
    # A node refuses to run as the owner (a superuser here): the grants would not restrain it.
    r = cli(["status", "--json"], node_env)
    if json.loads(r.stdout)["subjects"] != 0:
        fail("a new store has subjects")
    tokens = {}
    for role in ("operator", "trainer", "privacy_officer", "support", "auditor"):
        out = cli(["tokens", "add", "--tokens", TOKENS, "--role", role, "--actor", f"{role}-1", "--json"], node_env).stdout
        tokens[role] = json.loads(out)["token"]

    def free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    ports = [free_port() for _ in range(3)]

    def start(i):
        log = open(os.path.join(work, f"node{i}.log"), "w")
        p = subprocess.Popen([P, "serve", "--listen", f"127.0.0.1:{ports[i]}", "--tokens", TOKENS],
                             env=node_env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(p)
        deadline = time.time() + 60
        while time.time() < deadline:
            if p.poll() is not None:
                fail(f"node {i} exited with {p.returncode}: {open(log.name).read()[-600:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ports[i]}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return p
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.2)
        fail(f"node {i} did not answer /healthz within 60 s")

    nodes = [start(i) for i in range(3)]
    say(f"3 nodes serving on ports {ports} against {NODE_URL}")

    def call(i, method, path, role, body=None, timeout=120):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{ports[i]}{path}", data=data, method=method,
                                     headers={"Authorization": f"Bearer {tokens[role]}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    # 2. Ingest on two nodes at once.
    subprocess.run([G, "gen", "24000", "p.csv"], check=True, capture_output=True)
    with open("p.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k, v in list(r.items()):
            if v == "":
                del r[k]
    a, b, big = rows[:1500], rows[1500:3000], rows[3000:]
    results = {}

    def ingest(i, part, key):
        results[key] = call(i, "POST", "/v1/profiles", "operator", part)

    # A refused body names the record and field in `location`, as on SQLite.
    s, body = call(0, "POST", "/v1/profiles", "operator", [dict(a[0], age="300")])
    if s != 400 or json.loads(body).get("location") != {"record": 1, "field": "age"}:
        fail(f"a refused profile body: {s} {body[:300]}; want 400 with location {{record 1, field age}}")
    ta = threading.Thread(target=ingest, args=(0, a, "a"))
    tb = threading.Thread(target=ingest, args=(1, b, "b"))
    ta.start(); tb.start(); ta.join(); tb.join()
    for k in ("a", "b"):
        if results[k][0] != 200:
            fail(f"concurrent ingest {k}: {results[k][0]} {results[k][1][:300]}")
    subjects = json.loads(cli(["status", "--json"], node_env).stdout)["subjects"]
    if subjects != 3000:
        fail(f"after two concurrent ingests: {subjects} subjects, want 3000")
    say("two nodes ingested 1,500 customers each at once: 3,000 subjects")

    # Consent for the analytics purpose (the population the queries count).
    with open("ids.txt", "w") as f:
        f.write("\n".join(r["customer_id"] for r in a + b) + "\n")
    r = cli(["consent", "grant", "--purpose", "analytics", "--subjects", "ids.txt", "--role", "privacy_officer", "--json"], node_env)
    # stderr carries errors only: no log line of the PostgreSQL client (such as its warning
    # for a connection leased before the pool runs).
    if r.stderr.strip():
        fail(f"consent grant --json printed on stderr: {r.stderr.strip()[:300]}")

    # 3. 30 queries race over three nodes for a budget that fits 10.
    answers = []
    lock = threading.Lock()

    def query(i):
        s, body = call(i % 3, "POST", "/v1/queries", "trainer", {"kind": "count", "purpose": "analytics", "epsilon": 0.39, "fresh": True})
        with lock:
            answers.append((s, body))

    threads = [threading.Thread(target=query, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    granted = [a for a in answers if a[0] == 200]
    refused = [a for a in answers if a[0] != 200]
    if len(granted) != 10:
        fail(f"{len(granted)} of 30 racing queries were answered; the budget fits exactly 10: {sorted(set(s for s, _ in answers))} {refused[:1]}")
    bad = [a for a in refused if a[0] >= 500 or "budget" not in a[1]]
    if bad:
        fail(f"a refused query did not say the budget ran out: {bad[0][0]} {bad[0][1][:300]}")
    s, budget = call(2, "GET", "/v1/budget", "trainer")
    say(f"30 queries over 3 nodes for a budget of 10: 10 answered, 20 refused ({refused[0][0]}, the budget); budget: {budget[:160]}")

    # 4. Erasure on node 1, seen by nodes 2 and 3 on their next read.
    victim = a[7]["customer_id"]
    for i in (1, 2):
        s, _ = call(i, "GET", f"/v1/subjects/{victim}?purpose=customer_support", "support")
        if s != 200:
            fail(f"node {i} could not read a customer before the erasure: {s}")
    s, body = call(0, "DELETE", f"/v1/subjects/{victim}?reason=request", "privacy_officer")
    if s != 200:
        fail(f"erasure on node 1: {s} {body[:300]}")
    for i in (1, 2):
        s, body = call(i, "GET", f"/v1/subjects/{victim}?purpose=customer_support", "support")
        if s != 404:
            fail(f"node {i + 1} answered {s} for an erased customer: {body[:200]}")
    say("erased on node 1; nodes 2 and 3 answer 404 on their next read")

    # 4a. Keys rotated from the CLI while nodes 1 and 2 run on the same keyring file: every
    # data key is re-wrapped under the new version; both nodes still read at once (they take
    # the new KEK the first time they meet it) and adopt the rotated keyring on their own
    # (keys.adopt), so what they ingest next is wrapped under the new version.
    r = cli(["keys", "rotate", "--role", "privacy_officer", "--json"], node_env)
    active = json.loads(r.stdout)["active"]
    for i in (0, 1):
        s, body = call(i, "GET", f"/v1/subjects/{b[3]['customer_id']}?purpose=customer_support", "support")
        if s != 200:
            fail(f"node {i + 1} could not read a customer after another process rotated the keys: {s} {body[:200]}")
    deadline = time.time() + 20
    while time.time() < deadline:
        adopted = int(sql("SELECT count(*) FROM profilevault.audit_log WHERE entry LIKE '%\"api.operation\":\"keys.adopt\"%'", DB))
        # All three nodes read the one keyring file: wait for every one of them (two entries
        # could be nodes 1 and 3, and node 2, not yet adopted, would wrap under the old version:
        # the documented gap before a node adopts).
        if adopted >= 3:
            break
        time.sleep(0.25)
    else:
        fail(f"the running nodes did not adopt the rotated keyring within 20 s ({adopted} keys.adopt entries)")
    fresh = dict(a[0], customer_id="rotated-keyring-customer-1")
    for i in (0, 1):
        fresh = dict(fresh, customer_id=f"rotated-keyring-customer-{i}")
        if "email" in fresh:
            fresh["email"] = f"rotated-{i}@example.org"
        s, body = call(i, "POST", "/v1/profiles", "operator", [fresh])
        if s != 200:
            fail(f"ingest on node {i + 1} after the rotation: {s} {body[:200]}")
    old = int(sql(f"SELECT count(*) FROM profilevault.subjects WHERE kek_version <> {int(active)}", DB))
    if old != 0:
        fail(f"{old} data keys are not wrapped under the active version {active} after the rotation and the nodes' ingests")
    say(f"keys rotated on the CLI: nodes 1 and 2 read at once, adopted version {active} on their own, and wrap new keys with it")

    # 4b. Token lifecycle across nodes (issue 20): a token revoked with the CLI is refused by
    # every node on its next request, other tokens go on; the refusals are audited in the one
    # chain without token material; one node's failures from an address end in 429.
    def call_token(i, path, token):
        req = urllib.request.Request(f"http://127.0.0.1:{ports[i]}{path}", headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read().decode(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), dict(e.headers)

    added = json.loads(cli(["tokens", "add", "--tokens", TOKENS, "--role", "auditor", "--actor", "auditor-2", "--json"], node_env).stdout)
    for i in range(3):
        s, body, _ = call_token(i, "/v1/audit/head", added["token"])
        if s != 200:
            fail(f"node {i + 1} refused a new token: {s} {body[:200]}")
    revoked = json.loads(cli(["tokens", "revoke", "--tokens", TOKENS, added["id"], "--json"], node_env).stdout)
    if revoked != {"revoked": added["id"]}:
        fail(f"tokens revoke --json printed {revoked}")
    for i in range(3):
        s, body, _ = call_token(i, "/v1/audit/head", added["token"])
        if s != 401 or json.loads(body).get("error") != "token revoked":
            fail(f"node {i + 1} answered {s} {body[:200]} for a revoked token on its next request; want 401 token revoked")
        s, body, _ = call_token(i, "/v1/audit/head", tokens["auditor"])
        if s != 200:
            fail(f"node {i + 1} refused another token after a revocation: {s} {body[:200]}")
    failed = int(sql("SELECT count(*) FROM profilevault.audit_log WHERE entry LIKE '%\"api.operation\":\"auth.failed\"%'", DB))
    if failed != 3:
        fail(f"the chain holds {failed} auth.failed entries after 3 refusals, want 3")
    leaked = int(sql(f"SELECT count(*) FROM profilevault.audit_log WHERE strpos(entry, '{added['token'][:16]}') > 0", DB))
    if leaked != 0:
        fail("token material in the audit log")
    # Node 2 has seen one failure from 127.0.0.1; 9 more reach the default limit of 10.
    statuses = [call_token(1, "/v1/audit/head", "not-a-token")[0] for _ in range(9)]
    s, body, headers = call_token(1, "/v1/audit/head", tokens["auditor"])
    retry = {k.lower(): v for k, v in headers.items()}.get("retry-after", "")
    if statuses != [401] * 9 or s != 429 or not retry.isdigit() or not json.loads(body).get("error", "").startswith("too many"):
        fail(f"failed authentications on node 2: {statuses} then {s} (Retry-After {retry!r}) {body[:200]}; want 9 x 401 then 429")
    s, _, _ = call_token(0, "/v1/audit/head", tokens["auditor"])
    if s != 200:
        fail(f"node 1 answered {s}: another node's lockout must not apply")
    say("a revoked token is refused by all three nodes on their next request; 429 after 10 failures on one node")

    # 5. A node killed mid-request.
    before = json.loads(cli(["status", "--json"], node_env).stdout)["subjects"]
    killed = {}

    def big_ingest():
        try:
            killed["answer"] = call(2, "POST", "/v1/profiles", "operator", big, timeout=120)
        except Exception as e:  # the connection dies with the node
            killed["answer"] = ("connection", str(e))

    t = threading.Thread(target=big_ingest)
    t.start()
    time.sleep(0.8)
    nodes[2].send_signal(signal.SIGKILL)
    nodes[2].wait()
    t.join()
    after = json.loads(cli(["status", "--json"], node_env).stdout)["subjects"]
    if after not in (before, before + len(big)):
        fail(f"a node killed mid-ingest left {after - before} of {len(big)} customers: a body is all or nothing")
    for r in (a[0], b[-1]):
        s, _ = call(0, "GET", f"/v1/subjects/{r['customer_id']}?purpose=customer_support", "support")
        if s != 200:
            fail(f"a customer committed before the kill is not readable: {s}")
    say(f"node 3 killed mid-ingest (answer: {str(killed.get('answer'))[:60]}); subjects {before} -> {after}: nothing committed was lost")

    # 6. One chain for the cluster, verified; it holds the entries of all three nodes.
    r = cli(["audit", "verify", "--role", "auditor", "--json"], node_env, check=False)
    if r.returncode != 0:
        fail(f"the cluster's audit chain does not verify: {r.stdout[:300]} {r.stderr[:300]}")
    queries = int(sql("SELECT count(*) FROM profilevault.audit_log WHERE entry LIKE '%\"api.operation\":\"query.count\"%'", DB))
    if queries != 30:
        fail(f"the chain holds {queries} query entries, want 30 (10 granted, 20 refused)")
    heads = sql("SELECT count(*) FROM profilevault.audit_head", DB)
    say(f"one audit chain ({heads} head row) verifies; it holds all 30 query entries from the three nodes")
    for p in nodes[:2]:
        p.send_signal(signal.SIGTERM)
    for p in nodes[:2]:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
    print("postgres-nodes-test: ok")
finally:
    cleanup()
