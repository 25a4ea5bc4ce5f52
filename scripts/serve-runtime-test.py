#!/usr/bin/env python3
"""`profilectl serve` as an operator runs it (issue 20, part 2): TLS, JSON logs, --config,
--version, the busy port and the non-loopback refusal, /metrics.

    PROFILECTL=.build/debug/profilectl python3 scripts/serve-runtime-test.py

What it checks, against the built binary on a fresh SQLite store:
  1. `profilectl --version` prints the version, the same one /metrics reports;
  2. plain HTTP on a non-loopback address is refused (exit 64) without --insecure-http, and
     with it the service starts after ONE warning line saying why it is dangerous;
  3. TLS: with a throw-away CA and a server certificate for 127.0.0.1/localhost made here by
     the openssl CLI (never committed), a client that checks the certificate against the CA
     gets answers over HTTP/1.1 and over HTTP/2 (ALPN h2, raw frames, and curl --http2);
     a client that does not trust that CA (the system's roots, or another CA) is refused;
  4. bad TLS files: a missing certificate, a key readable by others, a key of another
     certificate, a file that is no PEM: exit 78 naming the file, never a byte of the key;
  5. `--log-format json`: every stderr line is one JSON object; request lines carry time,
     level, request_id, route (the template), status, duration_ms and actor, and no customer
     ID, e-mail, name, token or query value from the requests made;
  6. `serving on ...` comes once the port is bound; a busy port gives one clear error line,
     a non-zero exit and no `serving on`;
  7. `--config FILE`: the same keys as the flags, flags win; an unknown key or a wrong type
     is refused naming file, line and key, never the value;
  8. /metrics: store and process figures (subjects, audit entries, store and WAL bytes, budget,
     resident memory, open fds) in Prometheus text, and no customer ID.
Standard library, the openssl CLI and curl. Exits non-zero with a message on the first failure.
"""
import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

# Files this script writes are private (serve refuses a --config file others may write).
os.umask(0o077)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
P = os.path.abspath(os.environ.get("PROFILECTL", os.path.join(REPO, ".build/debug/profilectl")))
POLICY = os.path.join(REPO, "policies")


def fail(msg):
    print(f"serve-runtime-test: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def say(msg):
    print(f"serve-runtime-test: {msg}", flush=True)


if not os.access(P, os.X_OK):
    fail(f"no executable at {P} (build first: swift build)")
OPENSSL = shutil.which("openssl") or fail("the openssl CLI is needed (apt-get install openssl)")
CURL = shutil.which("curl")

work = tempfile.mkdtemp(prefix="pv-runtime.")
os.chdir(work)
KEYS = os.path.join(work, "keys.json")
STORE = os.path.join(work, "store.sqlite")
TOKENS = os.path.join(work, "tokens.json")
env = {**os.environ, "PROFILEVAULT_KEYS": KEYS, "PROFILEVAULT_POLICY": POLICY, "PROFILEVAULT_STORE": STORE}
env.pop("PROFILEVAULT_LOG_LEVEL", None)
procs = []


def cli(args, check=True, extra_env=None, timeout=120):
    r = subprocess.run([P] + args, capture_output=True, text=True, env={**env, **(extra_env or {})}, timeout=timeout)
    if check and r.returncode != 0:
        fail(f"profilectl {' '.join(args[:3])}: exit {r.returncode}: {r.stderr.strip()[:400]}")
    return r


def openssl(*args):
    r = subprocess.run([OPENSSL] + list(args), capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"openssl {' '.join(args[:2])}: {r.stderr.strip()[:300]}")


def make_ca(name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def make_server_cert(ca, name):
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=localhost",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")
    with open(f"{name}.ext", "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")
    os.chmod(f"{name}.key", 0o600)


class Server:
    """A running `profilectl serve`, its stderr collected in a file."""

    def __init__(self, args, name, extra_env=None, wait=True):
        self.log_path = os.path.join(work, f"{name}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([P, "serve"] + args, env={**env, **(extra_env or {})},
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        procs.append(self.proc)
        self.url = None
        if wait:
            self.wait_serving()

    def text(self):
        with open(self.log_path) as f:
            return f.read()

    def wait_serving(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.search(r"serving on (https?://[^ \"]+)", self.text())
            if m:
                self.url = m.group(1)
                return
            if self.proc.poll() is not None:
                fail(f"serve exited with {self.proc.returncode} before serving: {self.text()[-600:]}")
            time.sleep(0.1)
        fail(f"serve printed no `serving on` within {timeout} s: {self.text()[-600:]}")

    @property
    def port(self):
        return int(self.url.rsplit(":", 1)[1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                fail("serve did not stop within 30 s of SIGTERM")
        self.log.close()
        return self.text()


def cleanup():
    for p in procs:
        if p.poll() is None:
            p.kill()


def tls_context(cafile=None, alpn=None):
    ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def https(server, method, path, token=None, body=None, cafile="ca.pem", headers=None):
    """One HTTP/1.1 request over TLS with the CA pinned; (status, body text, headers)."""
    data = None if body is None else json.dumps(body).encode()
    h = {"Content-Type": "application/json", **(headers or {})}
    if token:
        h["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(server.url + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=60, context=tls_context(cafile)) as r:
            return r.status, r.read().decode(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers


def h2_get(port, path, cafile):
    """GET over HTTP/2 with raw frames (ALPN h2, certificate checked): (status, body bytes)."""
    ctx = tls_context(cafile, alpn=["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            if s.selected_alpn_protocol() != "h2":
                fail(f"ALPN chose {s.selected_alpn_protocol()!r}, want h2")

            def frame(kind, flags, stream, payload):
                return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload

            def literal(index, value):   # literal header field without indexing, indexed name
                v = value.encode()
                return bytes([index]) + bytes([len(v)]) + v

            # :method GET (2), :scheme https (7), :path (4) literal, :authority (1) literal.
            block = bytes([0x82, 0x87]) + literal(4, path) + literal(1, f"127.0.0.1:{port}")
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"") + frame(1, 0x5, 1, block))
            buf, status, body, ended = b"", None, b"", False
            deadline = time.time() + 30
            while not ended and time.time() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while len(buf) >= 9:
                    length = int.from_bytes(buf[:3], "big")
                    if len(buf) < 9 + length:
                        break
                    kind, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                    payload, buf = buf[9:9 + length], buf[9 + length:]
                    if kind == 4 and not flags & 1:      # the server's SETTINGS: acknowledge
                        s.sendall(frame(4, 1, 0, b""))
                    elif kind == 1 and stream == 1:      # HEADERS: :status 200 is static entry 8
                        status = 200 if payload[:1] == b"\x88" else ("other", payload[:1].hex())
                        ended = ended or bool(flags & 1)
                    elif kind == 0 and stream == 1:      # DATA
                        body += payload
                        ended = ended or bool(flags & 1)
                    elif kind == 7:                      # GOAWAY
                        fail(f"HTTP/2 GOAWAY from the server: {payload.hex()}")
            return status, body


try:
    # --- set-up: a keyring, a store, a token per role -----------------------------------------
    cli(["keys", "generate", "--out", KEYS])
    cli(["init"])
    tokens = {}
    for role in ("operator", "support", "privacy_officer", "trainer", "auditor"):
        out = cli(["tokens", "add", "--tokens", TOKENS, "--role", role, "--actor", f"{role}-1", "--json"]).stdout
        tokens[role] = json.loads(out)["token"]

    # --- 1. --version ---------------------------------------------------------------------------
    r = cli(["--version"])
    version = r.stdout.strip()
    if not re.fullmatch(r"\d+\.\d+\.\d+", version) or r.stderr:
        fail(f"--version printed {r.stdout!r} / {r.stderr!r}; want one version line")
    say(f"profilectl --version: {version}")

    # --- 2. plain HTTP beyond loopback --------------------------------------------------------
    r = cli(["serve", "--listen", "0.0.0.0:0", "--tokens", TOKENS], check=False, timeout=60)
    lines = r.stderr.strip().splitlines()
    if r.returncode != 64 or len(lines) != 1 or "--insecure-http" not in lines[0] or "serving on" in r.stderr:
        fail(f"plain HTTP on 0.0.0.0 without --insecure-http: exit {r.returncode}, stderr {r.stderr!r}; want 64 and one line")
    insecure = Server(["--listen", "0.0.0.0:0", "--tokens", TOKENS, "--insecure-http"], "insecure")
    text = insecure.stop()
    warnings = [l for l in text.splitlines() if l.startswith("warning: --insecure-http")]
    if len(warnings) != 1 or "unencrypted" not in warnings[0]:
        fail(f"--insecure-http on 0.0.0.0: want one warning line saying why, got: {text[:600]!r}")
    if text.index("warning: --insecure-http") > text.index("serving on http://"):
        fail("the --insecure-http warning must come before the service starts")
    say("plain HTTP on 0.0.0.0: refused (64) without --insecure-http; with it, one warning line")

    # --- 3. TLS with a client that checks the certificate --------------------------------------
    make_ca("ca")
    make_ca("otherca")
    make_server_cert("ca", "server")
    make_server_cert("otherca", "stranger")
    tls = Server(["--listen", "127.0.0.1:0", "--tokens", TOKENS, "--tls-cert", "server.pem", "--tls-key", "server.key",
                  "--log-format", "json"], "tls")
    if not tls.url.startswith("https://127.0.0.1:"):
        fail(f"serving on {tls.url}; want https://127.0.0.1:PORT")
    s, body, _ = https(tls, "GET", "/healthz")
    if s != 200 or json.loads(body).get("status") != "ok":
        fail(f"GET /healthz over TLS with the CA pinned: {s} {body[:200]}")
    # The same over localhost (the certificate names it too).
    tls_localhost = type("S", (), {"url": f"https://localhost:{tls.port}"})()
    s, _, _ = https(tls_localhost, "GET", "/healthz")
    if s != 200:
        fail(f"GET https://localhost:{tls.port}/healthz: {s}")
    status, h2body = h2_get(tls.port, "/healthz", "ca.pem")
    if status != 200 or b'"ok"' not in h2body:
        fail(f"GET /healthz over HTTP/2: status {status}, body {h2body[:200]!r}")
    if CURL:
        r = subprocess.run([CURL, "-sS", "--http2", "--cacert", "ca.pem", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                            f"https://127.0.0.1:{tls.port}/healthz"], capture_output=True, text=True, timeout=60)
        if r.returncode != 0 or r.stdout.strip() != "2 200":
            fail(f"curl --http2 --cacert: {r.stdout!r} {r.stderr.strip()[:200]}")
        r = subprocess.run([CURL, "-sS", "--http1.1", "--cacert", "ca.pem", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                            f"https://127.0.0.1:{tls.port}/healthz"], capture_output=True, text=True, timeout=60)
        if r.returncode != 0 or r.stdout.strip() != "1.1 200":
            fail(f"curl --http1.1 --cacert: {r.stdout!r} {r.stderr.strip()[:200]}")
    # Clients that do not trust the CA: the system's roots, another CA. Both must refuse.
    for cafile, who in ((None, "the system's roots"), ("otherca.pem", "another CA")):
        try:
            https(tls, "GET", "/healthz", cafile=cafile)
            fail(f"a client trusting {who} talked to the service: the certificate was not checked")
        except urllib.error.URLError as e:
            if not isinstance(e.reason, ssl.SSLCertVerificationError):
                fail(f"a client trusting {who}: {e.reason!r}; want a certificate verification failure")
    if CURL:
        r = subprocess.run([CURL, "-sS", "-o", "/dev/null", f"https://127.0.0.1:{tls.port}/healthz"], capture_output=True, text=True, timeout=60)
        if r.returncode == 0:
            fail("curl without --cacert talked to the service")
    # Plain HTTP to the TLS port gets no HTTP answer.
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{tls.port}/healthz", timeout=10)
        fail("plain HTTP to the TLS port was answered")
    except Exception:
        pass
    say(f"TLS on {tls.url}: HTTP/1.1 and HTTP/2 (ALPN h2) with the CA pinned; untrusting clients refused")

    # --- 5. requests whose values must stay out of the logs -------------------------------------
    secret_ids = [f"CUSTSECRET{i:04d}X" for i in range(5)]
    emails = [f"someone.secret{i}@example.org" for i in range(5)]
    names = [f"Zebediah Quux{i}" for i in range(5)]
    phones = [f"+49 30 777{i:04d}" for i in range(5)]
    profiles = [{"customer_id": c, "email": e, "full_name": n, "phone": ph, "birth_date": "1979-03-04", "age": 41,
                 "gender": "other", "country": "DE", "annual_income": 51234}
                for c, e, n, ph in zip(secret_ids, emails, names, phones)]
    s, body, _ = https(tls, "POST", "/v1/profiles", tokens["operator"], profiles)
    if s != 200:
        fail(f"ingest over TLS: {s} {body[:300]}")
    s, body, _ = https(tls, "GET", f"/v1/subjects/{secret_ids[0]}?purpose=customer_support", tokens["support"],
                       headers={"x-request-id": "runtime-test-get-1"})
    if s != 200 or emails[0] not in body:
        fail(f"GET subject over TLS: {s} {body[:300]}")
    s, _, _ = https(tls, "GET", f"/v1/subjects/NOSUCH{secret_ids[1]}?purpose=customer_support", tokens["support"])
    if s != 404:
        fail(f"GET unknown subject: {s}")
    s, _, _ = https(tls, "GET", f"/v1/find?field=email&value={emails[2]}", tokens["support"])
    s, _, _ = https(tls, "GET", f"/v1/nosuchroute/{secret_ids[3]}?q={emails[3]}", tokens["support"])
    s, _, _ = https(tls, "GET", "/v1/budget", "not-a-valid-token-" + secret_ids[4])
    if s != 401:
        fail(f"a bad token: {s}")
    s, body, _ = https(tls, "POST", "/v1/queries", tokens["trainer"],
                       {"kind": "count", "purpose": "analytics", "epsilon": 0.1, "where": f"country=DE"})

    # --- 8. /metrics ----------------------------------------------------------------------------
    s, metrics, headers = https(tls, "GET", "/metrics")
    if s != 200 or not headers.get("Content-Type", "").startswith("text/plain"):
        fail(f"GET /metrics: {s} {headers.get('Content-Type')}")
    want = {
        "profilevault_store_subjects": lambda v: v == 5,
        "profilevault_store_audit_entries": lambda v: v >= 3,
        "profilevault_store_size_bytes": lambda v: v > 0,
        "profilevault_store_wal_bytes": lambda v: v >= 0,
        "profilevault_budget_spent_epsilon": lambda v: v >= 0,
        "process_resident_memory_bytes": lambda v: v > 1 << 20,
        "process_open_fds": lambda v: v > 3,
        "profilevault_build_info": lambda v: v == 1,
    }
    for name, ok in want.items():
        m = re.search(rf"^{name}(\{{[^}}]*\}})? ([0-9.e+-]+)$", metrics, re.M)
        if not m or not ok(float(m.group(2))):
            fail(f"/metrics: {name} missing or wrong: {m.group(0) if m else None}")
    if f'version="{version}"' not in metrics:
        fail(f"/metrics: build_info does not carry version {version}")
    for v in secret_ids + emails + names + phones:
        if v in metrics:
            fail("/metrics carries a customer ID or value")
    say("/metrics: store figures, process figures, budget and version; no customer value")

    # --- 5 (cont.). the JSON log lines ---------------------------------------------------------
    text = tls.stop()
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            rec = json.loads(line)
        except ValueError:
            fail(f"--log-format json: stderr line {n} is not JSON: {line[:200]!r}")
        if not isinstance(rec, dict) or not {"time", "level", "msg"} <= rec.keys():
            fail(f"--log-format json: line {n} lacks time/level/msg: {line[:200]}")
        records.append(rec)
    requests = [r for r in records if r["msg"] == "request"]
    if len(requests) < 10:
        fail(f"--log-format json: {len(requests)} request lines, want one per request")
    for r in requests:
        for key in ("request_id", "route", "status", "duration_ms", "method"):
            if key not in r:
                fail(f"a request log line lacks {key}: {r}")
        if not isinstance(r["status"], int) or not isinstance(r["duration_ms"], (int, float)):
            fail(f"status and duration_ms must be numbers: {r}")
    get = [r for r in requests if r["request_id"] == "runtime-test-get-1"]
    if len(get) != 1 or get[0]["route"] != "/v1/subjects/{customer_id}" or get[0]["status"] != 200 or get[0].get("actor") != "support-1":
        fail(f"the GET subject log line: {get}")
    if not any(r["route"] == "unmatched" for r in requests):
        fail("an unknown route logs route unmatched")
    if not any(r["msg"].startswith("serving on https://") for r in records):
        fail("no `serving on` JSON line")
    leaked = [v for v in secret_ids + emails + names + phones + list(tokens.values()) + ["NOSUCH", "nosuchroute", "purpose=", "field=email"]
              if v in text]
    if leaked:
        fail(f"the JSON log carries request values: {leaked}")
    say(f"--log-format json: {len(records)} lines, all JSON; request lines hold route templates, no ID, value or token")

    # --- 6. a busy port -------------------------------------------------------------------------
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    busy = blocker.getsockname()[1]
    r = cli(["serve", "--listen", f"127.0.0.1:{busy}", "--tokens", TOKENS], check=False, timeout=60)
    blocker.close()
    lines = r.stderr.strip().splitlines()
    if r.returncode == 0 or "serving on" in r.stderr or len(lines) != 1 or "port is in use" not in lines[0] \
            or not lines[0].startswith("error: cannot listen on 127.0.0.1:"):
        fail(f"a busy port: exit {r.returncode}, stderr {r.stderr!r}; want one `error: cannot listen ...: the port is in use` line")
    say(f"a busy port: exit {r.returncode}, one line: {lines[0]}")

    # --- 4. bad TLS files -----------------------------------------------------------------------
    with open("server.key") as f:
        key_lines = [l for l in f.read().splitlines() if l and not l.startswith("-----")]
    shutil.copy("server.key", "open.key")
    os.chmod("open.key", 0o644)
    with open("garbage.key", "w") as f:
        f.write("not a key at all\n" + "\n".join(key_lines) + "\n")
    os.chmod("garbage.key", 0o600)
    cases = [
        (["--tls-cert", "missing.pem", "--tls-key", "server.key"], 78, "missing.pem"),
        (["--tls-cert", "server.pem", "--tls-key", "open.key"], 78, "readable by group or others"),
        (["--tls-cert", "server.pem", "--tls-key", "stranger.key"], 78, "does not match"),
        (["--tls-cert", "server.pem", "--tls-key", "garbage.key"], 78, "garbage.key: not a PEM private key"),
        (["--tls-cert", "server.key", "--tls-key", "server.key"], 78, "not a PEM certificate"),
        (["--tls-cert", "server.pem"], 64, "--tls-cert needs --tls-key"),
    ]
    for args, code, words in cases:
        r = cli(["serve", "--listen", "127.0.0.1:0", "--tokens", TOKENS] + args, check=False, timeout=60)
        if r.returncode != code or words not in r.stderr or "serving on" in r.stderr:
            fail(f"serve {' '.join(args)}: exit {r.returncode}, stderr {r.stderr.strip()[:300]!r}; want {code} and {words!r}")
        if any(l in r.stderr for l in key_lines):
            fail(f"serve {' '.join(args)}: the error shows bytes of the key")
    say("bad TLS files: 78 naming the file (64 for a missing --tls-key), no key bytes shown")

    # --- 7. --config FILE -----------------------------------------------------------------------
    os.mkdir("etc")
    shutil.copy("server.pem", "etc/cert.pem")
    shutil.copy("server.key", "etc/key.pem")
    with open("etc/serve.yaml", "w") as f:
        f.write(f"""# serve's options, as the flags
listen: "127.0.0.1:0"
tokens: {TOKENS}
tls-cert: cert.pem          # relative to this file
tls-key: key.pem
log-format: json
log-level: info
request-timeout: 20
max-body-bytes: 1048576
store: {STORE}
keys: {KEYS}
policy: {POLICY}
""")
    srv = Server(["--config", "etc/serve.yaml"], "config", extra_env=None)
    s, _, _ = https(srv, "GET", "/healthz")
    text = srv.stop()
    if s != 200 or not all(l.startswith("{") for l in text.splitlines()):
        fail(f"serve --config: {s}; log: {text[:300]!r}")
    # Flags win: --log-format text over the file's json.
    srv = Server(["--config", "etc/serve.yaml", "--log-format", "text"], "config-text")
    text = srv.stop()
    if not text.startswith("serving on https://") and "\nserving on https://" not in text:
        fail(f"--log-format text over the file's json: {text[:300]!r}")
    bad = [
        ("unknown: 1\n", 1, "unknown key 'unknown'", None),
        ("listen: \"127.0.0.1:0\"\ntokens: x\ninsecure-http: SECRETVALUE42\n", 3, "key insecure-http: expected true or false", "SECRETVALUE42"),
        ("request-timeout: SECRETVALUE43\n", 1, "key request-timeout: expected a number", "SECRETVALUE43"),
        ("listen: 8080\n", 1, "key listen: expected a string", None),
        ("listen: \"a\"\nlisten: \"b\"\n", 2, "key listen is given twice", None),
        ("- listen\n", 1, "expected a mapping", None),
        ("log-format: SECRETVALUE44\ntokens: x\n", 1, "key log-format: --log-format: expected text or json", "SECRETVALUE44"),
    ]
    for i, (content, line, words, secret) in enumerate(bad):
        path = f"etc/bad{i}.yaml"
        with open(path, "w") as f:
            f.write(content)
        r = cli(["serve", "--config", path], check=False, extra_env=None, timeout=60)
        where = f"{path}:{line}: " if line else f"{path}: "
        if r.returncode != 78 or where not in r.stderr or words not in r.stderr:
            fail(f"serve --config {content!r}: exit {r.returncode}, {r.stderr.strip()!r}; want 78, {where!r} and {words!r}")
        if secret and secret in r.stderr:
            fail(f"serve --config {content!r}: the error echoes the value")
    say("--config: keys as the flags, flags win; unknown keys and wrong types refused with file, line and key")
    print("serve-runtime-test: 8 passed, 0 failed")
finally:
    cleanup()
    shutil.rmtree(work, ignore_errors=True)
