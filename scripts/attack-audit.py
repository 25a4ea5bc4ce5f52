#!/usr/bin/env python3
"""The audit-forgery attack of issue 16, run as the attacker would: the release binary, the
store file, sqlite3 and SHA-256, and no keyring.

  PROFILECTL=path/to/profilectl scripts/attack-audit.py

1. An auditor exports the log and keeps the published heads (`audit head --json`).
2. mallory reads profiles; then, editing the file, deletes mallory's entries, renumbers the rest,
   recomputes the hash chain, deletes the checkpoints from the first changed entry and puts the
   triggers back.
3. The next operation of anyone (a `get`, the auditor's own `audit export`, `audit head`) must
   fail with exit 1 and append nothing; `audit verify` (with and without the auditor's head)
   must say NOT OK; the Python verifier must refuse any export of it.
4. A tail cut back to an older checkpoint (entries and checkpoints) cannot be seen from the file
   alone; `audit verify --expect-head HEADS` must see it.
Exit 0 when every attack fails; 1 with the first attack that worked.
"""
import hashlib, json, os, shutil, socket, sqlite3, subprocess, sys, tempfile, time, urllib.request

repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
P = os.path.abspath(os.environ.get("PROFILECTL", os.path.join(repo, ".build/debug/profilectl")))
work = tempfile.mkdtemp(prefix="pv-attack-")
env = dict(os.environ, PROFILEVAULT_STORE=work + "/s.sqlite", PROFILEVAULT_KEYS=work + "/k.json",
           PROFILEVAULT_POLICY=repo + "/policies")

def run(*args, role=None, actor=None):
    cmd = [P, *args] + (["--role", role] if role else []) + (["--actor", actor] if actor else [])
    r = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr

def must(cond, what):
    if not cond:
        print("attack-audit: FAIL: " + what, file=sys.stderr)
        sys.exit(1)

def canon(v):
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"), sort_keys=True)

def count(db):
    c = sqlite3.connect(db)
    try: return c.execute("SELECT count(*) FROM audit").fetchone()[0], c.execute("SELECT count(*) FROM audit_checkpoints").fetchone()[0]
    finally: c.close()

TRIGGERS = ["audit_no_update", "audit_no_delete", "audit_checkpoints_no_update", "audit_checkpoints_no_delete"]

def with_triggers_dropped(db, edit):
    c = sqlite3.connect(db)
    sqls = {n: c.execute("SELECT sql FROM sqlite_master WHERE name = ?", (n,)).fetchone()[0] for n in TRIGGERS}
    for n in TRIGGERS: c.execute("DROP TRIGGER " + n)
    edit(c)
    for n in TRIGGERS: c.execute(sqls[n])
    c.commit(); c.close()

def forge(c, actor):
    rows = c.execute("SELECT seq, time, entry, subject FROM audit ORDER BY seq").fetchall()
    first = next(seq for seq, _, e, _ in rows if json.loads(e)["actor.user.name"] == actor)
    kept = [r for r in rows if json.loads(r[2])["actor.user.name"] != actor]
    c.execute("DELETE FROM audit WHERE seq >= ?", (first,))
    c.execute("DELETE FROM audit_checkpoints WHERE seq >= ?", (first,))
    prev = c.execute("SELECT hash FROM audit WHERE seq = ?", (first - 1,)).fetchone()[0]
    for i, (_, t, e, subj) in enumerate(kept, 1):
        if i < first: continue
        entry = json.loads(e); entry["metadata.sequence"] = i
        text = canon(entry)
        h = hashlib.sha256(prev + text.encode()).digest()
        c.execute("INSERT INTO audit(seq, time, entry, prev_hash, hash, subject) VALUES (?,?,?,?,?,?)", (i, t, text, prev, h, subj))
        prev = h

try:
    must(run("keys", "generate", "--out", "k.json")[0] == 0, "keys generate")
    must(run("init")[0] == 0, "init")
    with open(work + "/p.csv", "w") as f:
        f.write("customer_id,email,full_name,phone,birth_date,age,gender,country,annual_income\n")
        for i in range(10):
            f.write("C%d,user%d@example.com,Test Person %d,+49 30 100%d,1980-01-0%d,%d,female,DE,50000\n" % (i, i, i, i, i % 9 + 1, 30 + i))
    rc, _, err = run("ingest", "profiles", "p.csv")
    must(rc == 0, "ingest: " + err)
    for i in range(3): run("get", "--subject", "C%d" % i, "--purpose", "customer_support", role="support", actor="sam")
    rc, _, err = run("audit", "export", "--out", "before.jsonl", role="auditor", actor="audra")
    must(rc == 0, "first export: " + err)
    rc, out, err = run("audit", "head", "--json", role="auditor", actor="audra")
    must(rc == 0, "audit head: " + err)
    head = json.loads(out)
    with open(work + "/heads.jsonl", "w") as f: f.write(out.strip() + "\n")
    must(run("audit", "public-key", "--out", "k.pem")[0] == 0, "public key")
    for i in range(4):
        run("get", "--subject", "C%d" % i, "--purpose", "customer_support", role="support", actor="mallory")
        run("get", "--subject", "C%d" % i, "--purpose", "customer_support", role="support", actor="sam")
    # The service publishes every head it signs (serve --publish-heads).
    rc, out, err = run("tokens", "add", "--tokens", "tokens.json", "--json", role="support", actor="svc")
    must(rc == 0, "tokens add: " + err)
    token = json.loads(out)["token"]
    sock = socket.socket(); sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]; sock.close()
    srv = subprocess.Popen([P, "serve", "--listen", "127.0.0.1:%d" % port, "--tokens", work + "/tokens.json",
                            "--publish-heads", work + "/served-heads.jsonl"], env=env, cwd=work,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        up = False
        for _ in range(150):
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=1) as r: up = r.status == 200; break
            except Exception:
                if srv.poll() is not None: break
                time.sleep(0.2)
        must(up, "serve --publish-heads did not come up")
        for i in range(2):
            req = urllib.request.Request("http://127.0.0.1:%d/v1/subjects/C%d?purpose=customer_support" % (port, i),
                                         headers={"Authorization": "Bearer " + token})
            with urllib.request.urlopen(req, timeout=10) as r: must(r.status == 200, "GET through the service")
    finally:
        srv.terminate()
        try: srv.wait(10)
        except subprocess.TimeoutExpired: srv.kill()
    served = [json.loads(l) for l in open(work + "/served-heads.jsonl") if l.strip()]
    must(len(served) == 3, "serve --publish-heads wrote %d heads, want 3 (start-up and two reads)" % len(served))
    must(oct(os.stat(work + "/served-heads.jsonl").st_mode & 0o777) == "0o600", "the heads file is not 0600")
    rc, out, _ = run("audit", "head", "--json", role="auditor", actor="audra")
    must(json.loads(out)["seq"] == served[-1]["seq"] and json.loads(out)["hash"] == served[-1]["hash"], "the last published head is not the store's head")
    with open(work + "/heads.jsonl", "a") as f:
        for h in served: f.write(json.dumps(h) + "\n")

    db = work + "/s.sqlite"
    # The published heads file grows with the honest log: the last honest head goes there too.
    rc, out, _ = run("audit", "head", "--json", role="auditor", actor="audra")
    with open(work + "/heads.jsonl", "a") as f: f.write(out.strip() + "\n")
    shutil.copy(db, work + "/honest.sqlite")
    for ext in ("-wal", "-shm"):
        if os.path.exists(db + ext): shutil.copy(db + ext, work + "/honest.sqlite" + ext)

    with_triggers_dropped(db, lambda c: forge(c, "mallory"))
    forged = count(db)

    rc, _, err = run("get", "--subject", "C5", "--purpose", "customer_support", role="support", actor="sam")
    must(rc == 1, "a get over the forged log: exit %d %s" % (rc, err))
    must("profile" not in err.lower() or "@" not in err, "the failure printed data")
    rc, _, err = run("audit", "export", "--out", "after.jsonl", role="auditor", actor="audra")
    must(rc == 1 and not os.path.exists(work + "/after.jsonl"), "the auditor's export signed the forged log: exit %d %s" % (rc, err))
    rc, _, err = run("audit", "head", "--json", role="auditor", actor="audra")
    must(rc == 1, "audit head printed a head over the forged log: exit %d" % rc)
    must(count(db) == forged, "something was appended to the forged log: %s -> %s" % (forged, count(db)))
    rc, out, _ = run("audit", "verify", "--json", role="auditor")
    must(rc == 1 and json.loads(out)["ok"] is False, "audit verify said ok over the forged log")
    rc, out, _ = run("audit", "verify", "--json", "--expect-head", head["hash"], role="auditor")
    must(rc == 1, "audit verify --expect-head said ok over the forged log")

    # An export the attacker writes himself from the forged file, reusing the old signed head.
    c = sqlite3.connect(db)
    lines = []
    for seq, e, prev, h in c.execute("SELECT seq, entry, prev_hash, hash FROM audit ORDER BY seq"):
        entry = json.loads(e); entry["prev_hash"] = prev.hex(); entry["hash"] = h.hex(); lines.append(canon(entry))
    c.close()
    old_head = [l for l in open(work + "/before.jsonl") if l.startswith('{"head"')][0]
    with open(work + "/fake.jsonl", "w") as f: f.write("\n".join(lines) + "\n" + old_head)
    rc, _, _ = run("audit", "verify", "--file", "fake.jsonl", "--public-key", "k.pem")
    must(rc == 1, "audit verify --file accepted a hand-made export")
    try:
        import cryptography  # noqa: F401
        r = subprocess.run([sys.executable, repo + "/scripts/verify-audit-export.py", work + "/fake.jsonl", work + "/k.pem"], capture_output=True)
        must(r.returncode == 1, "the Python verifier accepted a hand-made export")
        r = subprocess.run([sys.executable, repo + "/scripts/verify-audit-export.py", work + "/before.jsonl", work + "/k.pem"], capture_output=True)
        must(r.returncode == 0, "the Python verifier refused the honest export: %s" % r.stdout)
    except ImportError:
        print("attack-audit: note: python 'cryptography' missing; the Python verifier was not run")

    # Truncation back to an older checkpoint, on the honest copy: invisible to the file alone,
    # visible against the published heads.
    for ext in ("", "-wal", "-shm"):
        if os.path.exists(work + "/honest.sqlite" + ext): shutil.copy(work + "/honest.sqlite" + ext, db + ext)
        elif os.path.exists(db + ext): os.remove(db + ext)
    cut = head["seq"]
    with_triggers_dropped(db, lambda c: (c.execute("DELETE FROM audit WHERE seq > ?", (cut,)), c.execute("DELETE FROM audit_checkpoints WHERE seq > ?", (cut,))))
    rc, _, _ = run("audit", "verify", role="auditor")
    must(rc == 0, "the truncated log should verify from the file alone (documented limit)")
    rc, out, _ = run("audit", "verify", "--json", "--expect-head", "heads.jsonl", role="auditor")
    must(rc == 1, "audit verify --expect-head HEADS missed a truncated tail")
    print("attack-audit: ok: the forged log was never signed over (get, export, head exit 1, nothing appended), "
          "verify names it, hand-made exports are refused, and published heads catch a truncated tail")
finally:
    shutil.rmtree(work, ignore_errors=True)
