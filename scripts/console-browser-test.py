#!/usr/bin/env python3
"""The privacy console in a real browser (issue 21): headless Chromium driven by Selenium
against `profilectl serve` on a fresh SQLite store (or, with --postgres, a fresh PostgreSQL
database on the server of scripts/with-postgres.sh), with a token for each role.

    PROFILECTL=.build/debug/profilectl scripts/console-browser-test.sh [--screenshots DIR]
    scripts/with-postgres.sh env PROFILECTL=.build/debug/profilectl scripts/console-browser-test.sh --postgres

The policy is the repository's with one legitimate-interest purpose added (fraud_checks), so an
objection can be recorded.

What it walks (each check counted; the last line is `N passed, M failed`):
  1. without a session every page redirects to the sign-in page; a wrong token is refused;
  2. sign in as each role: the navigation shows only the pages the role may use, each of those
     pages loads (h1 and headings in order), and the session cookie is HttpOnly, SameSite=Strict,
     expiring (not Secure: this run is plain HTTP on loopback);
  3. the privacy officer opens an access request, fulfils it (the export's SHA-256 shown) and an
     erasure request (its receipt downloads; the erased subject's page shows its key shredded);
     withdraws a consent on the subject page (the timeline shows it); walks a rectification
     (rectify on the subject page, the value never shown back, then confirm and fulfil) and an
     objection (record it on the subject page, then fulfil) from the browser alone; signs out;
  4. the auditor verifies the audit log ("verify now"), downloads a JSON Lines export, and the
     console verifies it with the public key, then finds the first bad entry of a tampered copy;
     sees the sign-in and sign-out entries; pages through the log (older, newer);
  5. what each role must NOT see or do: the auditor has no "reveal" and no request queue, the
     trainer no request queue (403 page), a forged or missing CSRF token is refused with 403,
     a request without a session goes to the sign-in page, a revoked token ends its session;
     a forged CSRF token on the rectify and objection forms is refused, a role without the
     permission has no such form and gets 403 on a direct POST;
  6. the pages are readable with JavaScript off;
  7. accessibility: axe-core (axe-selenium-python) finds no serious or critical violation on any
     page, every form control has a label, headings do not skip a level, and the sign-in form
     and the main buttons are reached with the Tab key.
With --screenshots DIR it saves a PNG of each page there (docs/img/console/ in the repository).
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

os.umask(0o077)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
P = os.path.abspath(os.environ.get("PROFILECTL", os.path.join(REPO, ".build/debug/profilectl")))
ROLES = ["privacy_officer", "auditor", "trainer", "support", "operator"]
passed, failed = 0, []


def say(msg):
    print(f"console-browser-test: {msg}", flush=True)


def check(cond, what):
    global passed
    if cond:
        passed += 1
    else:
        failed.append(what)
        say(f"FAIL: {what}")
    return cond


def fatal(msg):
    say(f"FAIL: {msg}")
    print(f"{passed} passed, {len(failed) + 1} failed")
    sys.exit(1)


def cli(args, env, check_rc=True):
    r = subprocess.run([P] + args, capture_output=True, text=True, env=env, timeout=180)
    if check_rc and r.returncode != 0:
        fatal(f"profilectl {' '.join(args[:3])}: exit {r.returncode}: {r.stderr.strip()[:400]}")
    return r


def postgres_store():
    """A fresh database on the test server (scripts/with-postgres.sh), its service role and a
    login role for `serve` (which refuses to run as the owner): (owner env, node env, service,
    after_init, cleanup). As scripts/api-contract-test.py makes one."""
    import re
    import secrets
    base = os.environ.get("PROFILEVAULT_TEST_POSTGRES")
    if not base:
        fatal("--postgres: PROFILEVAULT_TEST_POSTGRES is not set (run through scripts/with-postgres.sh)")
    m = re.match(r"^postgres(?:ql)?://([^@/]+)@([^/]+)/([^?]+)(\?.*)?$", base)
    if not m:
        fatal("--postgres: cannot read PROFILEVAULT_TEST_POSTGRES")
    admin, hostport, params = m.group(1), m.group(2), m.group(4) or "?sslmode=disable"
    password = os.environ.get("PGPASSWORD", "")
    suffix = secrets.token_hex(4)
    db, service, node = "pvconsole_" + suffix, "pvconsole_svc_" + suffix, "pvconsole_node_" + suffix
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
            fatal(f"psql: {statement[:60]}: {r.stderr.strip()[:300]}")

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


def make_policy(work):
    """The repository's policies with one legitimate-interest purpose (fraud_checks) added."""
    policy = os.path.join(work, "policies")
    shutil.copytree(os.path.join(REPO, "policies"), policy)
    path = os.path.join(policy, "policy.yaml")
    with open(path) as f:
        text = f.read()
    text = text.replace("purposes:\n", "purposes:\n  fraud_checks:\n    data_use: analytics.reporting\n"
                        "    legal_basis: legitimate_interest\n    may_read: [user.location.imprecise, user.behavior]\n", 1)
    with open(path, "w") as f:
        f.write(text)
    return policy


def make_store(work, postgres=None):
    keys = os.path.join(work, "keyring.json")
    shutil.copyfile(os.path.join(REPO, "keys-example", "keyring.json"), keys)
    os.chmod(keys, 0o600)
    env = {**os.environ, "PROFILEVAULT_STORE": os.path.join(work, "store.sqlite"), "PROFILEVAULT_KEYS": keys,
           "PROFILEVAULT_POLICY": make_policy(work), "PROFILEVAULT_LOG_LEVEL": "error"}
    opts = ["--allow-example-keys"]
    if postgres:
        owner, nodeenv, service, after_init, _ = postgres
        cli(["init", "--service-role", service] + opts, {**env, **owner})
        after_init()
        env = {**env, **nodeenv}
    else:
        cli(["init"] + opts, env)
    ids = [f"C{i}" for i in range(1, 21)]
    profiles = os.path.join(work, "profiles.jsonl")
    with open(profiles, "w") as f:
        for i, cid in enumerate(ids):
            f.write(json.dumps({"customer_id": cid, "email": f"person{i}@example.com", "full_name": f"Person {i}",
                                "phone": f"+49 30 {1000 + i}", "birth_date": "1980-01-02", "age": 20 + i,
                                "gender": ["female", "male", "other"][i % 3], "country": ["DE", "FR", "GB"][i % 3],
                                "annual_income": 30000 + 1000 * i}) + "\n")
    events = os.path.join(work, "events.jsonl")
    with open(events, "w") as f:
        for i, cid in enumerate(ids):
            for j in range(3):
                f.write(json.dumps({"customer_id": cid, "kind": "purchase", "item": f"SKU-{(i + j) % 20:04d}",
                                    "value": 10 + j, "time": f"2026-10-{1 + j:02d}T12:00:00Z"}) + "\n")
    cli(["ingest", "profiles", profiles, "--format", "jsonl", "--role", "operator"] + opts, env)
    cli(["ingest", "events", events, "--format", "jsonl", "--role", "operator"] + opts, env)
    everyone = os.path.join(work, "everyone.txt")
    with open(everyone, "w") as f:
        f.write("\n".join(ids) + "\n")
    for purpose in ("analytics", "model_training"):
        cli(["consent", "grant", "--subjects", everyone, "--purpose", purpose, "--source", "browser-test",
             "--role", "privacy_officer"] + opts, env)
    # A release, so the budget page has something spent and a release to list.
    cli(["query", "count", "--purpose", "analytics", "--epsilon", "0.2", "--role", "trainer"] + opts, env, check_rc=False)
    # A request already overdue (received 40 days ago), so the register shows one in red.
    old = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 40 * 86400))
    cli(["requests", "open", "--type", "restriction", "--subject", "C9", "--received", old, "--role", "privacy_officer"] + opts, env)
    tokens_file = os.path.join(work, "tokens.json")
    tokens = {}
    for role in ROLES:
        out = cli(["tokens", "add", "--tokens", tokens_file, "--actor", f"console-{role}", "--role", role, "--json"] + opts, env)
        tokens[role] = json.loads(out.stdout)["token"]
    return env, opts, tokens_file, tokens


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, cookie=None, form=None, follow=False):
    """One request without the browser: (status, headers, body bytes); redirects not followed."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None
    opener = urllib.request.build_opener() if follow else urllib.request.build_opener(NoRedirect)
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if cookie:
        req.add_header("Cookie", cookie)
    if data is not None:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with opener.open(req, timeout=60) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def start_server(env, tokens_file, work, opts):
    for _ in range(5):
        port = free_port()
        log = open(os.path.join(work, f"serve-{port}.log"), "w")
        proc = subprocess.Popen([P, "serve", "--listen", f"127.0.0.1:{port}", "--tokens", tokens_file,
                                 "--log-level", "warning"] + opts, env=env, stdout=log, stderr=log)
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            try:
                if http("GET", base + "/healthz")[0] == 200:
                    return proc, base
            except OSError:
                pass
            time.sleep(0.2)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    fatal("profilectl serve did not come up")


def browser(javascript=True):
    o = Options()
    o.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or fatal("chromium not found")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000",
              "--no-first-run", "--disable-extensions", "--lang=en-US"):
        o.add_argument(a)
    if not javascript:
        o.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver_path = shutil.which("chromedriver") or fatal("chromedriver not found (apt-get install chromium-driver)")
    d = webdriver.Chrome(service=Service(executable_path=driver_path), options=o)
    d.set_page_load_timeout(60)
    return d


class Walk:
    def __init__(self, driver, base, shots):
        self.d, self.base, self.shots = driver, base, shots
        self.wait = WebDriverWait(driver, 30)

    def go(self, path):
        self.d.get(self.base + path)
        self.wait.until(lambda d: d.execute_script("return document.readyState") == "complete")

    def h1(self):
        return self.d.find_element(By.TAG_NAME, "h1").text

    def shot(self, name):
        if self.shots:
            self.d.save_screenshot(os.path.join(self.shots, f"{name}.png"))

    def click(self, css, confirm=False):
        old = self.d.find_element(By.TAG_NAME, "html")
        self.d.find_element(By.CSS_SELECTOR, css).click()
        if confirm:
            self.wait.until(EC.alert_is_present()).accept()

        def replaced(_):
            # The old document is gone once its element answers stale (or, while Chromium swaps
            # documents, "does not belong to the document"): both mean the new page came.
            try:
                old.is_enabled()
                return False
            except WebDriverException:
                return True
        self.wait.until(replaced)
        self.wait.until(lambda d: d.execute_script("return document.readyState") == "complete")

    def sign_in(self, token):
        self.d.delete_all_cookies()
        self.go("/console/sign-in")
        self.d.find_element(By.ID, "token").send_keys(token)
        self.click("#sign-in")

    def has(self, css):
        return len(self.d.find_elements(By.CSS_SELECTOR, css)) > 0

    def nav(self):
        return [a.get_attribute("href").split("/console", 1)[1] for a in self.d.find_elements(By.CSS_SELECTOR, "nav a")]

    def cookie_header(self):
        c = self.d.get_cookie("pv_console")
        return f"pv_console={c['value']}" if c else None

    def a11y(self, page, axe_cls):
        """Labels, heading order, and axe-core when installed."""
        unlabelled = self.d.execute_script("""
            const out = [];
            for (const el of document.querySelectorAll('input, select, textarea')) {
              if (el.type === 'hidden') continue;
              const byFor = el.id && document.querySelector('label[for="' + CSS.escape(el.id) + '"]');
              if (!byFor && !el.closest('label') && !el.getAttribute('aria-label')) out.push(el.name || el.id || el.outerHTML.slice(0, 60));
            }
            return out;""")
        check(not unlabelled, f"{page}: every form control has a label (unlabelled: {unlabelled})")
        levels = self.d.execute_script("return Array.from(document.querySelectorAll('h1,h2,h3,h4,h5,h6')).map(h => +h.tagName[1]);")
        ordered = bool(levels) and levels[0] == 1 and all(b <= a + 1 for a, b in zip(levels, levels[1:])) and levels.count(1) == 1
        check(ordered, f"{page}: one h1 first, headings never skip a level ({levels})")
        if axe_cls:
            axe = axe_cls(self.d)
            axe.inject()
            results = axe.run()
            bad = [v for v in results.get("violations", []) if v.get("impact") in ("serious", "critical")]
            check(not bad, f"{page}: axe-core finds no serious or critical violation ({[v['id'] for v in bad]})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--screenshots", help="save a PNG of each page in this directory")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--postgres", action="store_true", help="a PostgreSQL store (run through scripts/with-postgres.sh)")
    args = ap.parse_args()
    if not os.access(P, os.X_OK):
        fatal(f"no executable at {P} (build first: swift build)")
    try:
        from axe_selenium_python import Axe
    except ImportError:
        Axe = None
        say("axe-selenium-python is not installed: the scripted label and heading checks run alone")
    shots = os.path.abspath(args.screenshots) if args.screenshots else None
    if shots:
        os.makedirs(shots, exist_ok=True)
    work = tempfile.mkdtemp(prefix="pv-console.")
    postgres = postgres_store() if args.postgres else None
    say("store: " + ("PostgreSQL" if postgres else "SQLite"))
    proc, driver = None, None
    try:
        env, opts, tokens_file, tokens = make_store(work, postgres)
        proc, base = start_server(env, tokens_file, work, opts)
        driver = browser()
        w = Walk(driver, base, shots)

        # 1. No session: the sign-in page; a wrong token is refused.
        for path in ("/console/", "/console/requests", "/console/audit"):
            w.go(path)
            check(driver.current_url.endswith("/console/sign-in"), f"{path} without a session goes to the sign-in page")
        w.shot("sign-in")
        w.a11y("sign-in", Axe)
        w.sign_in("not-a-valid-token")
        check("sign-in failed" in driver.page_source and driver.current_url.endswith("/console/sign-in"), "a wrong token is refused")
        check(driver.get_cookie("pv_console") is None, "a wrong token gets no session cookie")
        # Keyboard: Tab from the top reaches the token field and the sign-in button.
        w.go("/console/sign-in")
        reached = []
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys(Keys.TAB)
        for _ in range(8):
            reached.append(driver.switch_to.active_element.get_attribute("id"))
            driver.switch_to.active_element.send_keys(Keys.TAB)
        check("token" in reached and "sign-in" in reached, f"the sign-in form is reached with Tab ({reached})")

        # 2. Each role: navigation, pages, cookie flags.
        expected = {
            "privacy_officer": {"/requests", "/subject", "/budget", "/policy", "/keys"},
            "auditor": {"/budget", "/audit", "/policy"},
            "trainer": {"/budget"},
            "support": {"/subject"},
            "operator": set(),
        }
        for role in ROLES:
            w.sign_in(tokens[role])
            check(w.h1() == "Console", f"{role}: signed in")
            nav = set(w.nav())
            check(nav == expected[role], f"{role}: the navigation shows exactly its pages ({sorted(nav)})")
            c = driver.get_cookie("pv_console")
            check(c is not None and c.get("httpOnly") is True and c.get("sameSite") == "Strict" and "expiry" in c
                  and c.get("secure") is False and c.get("path") == "/console/",
                  f"{role}: session cookie HttpOnly, SameSite=Strict, expiring, path /console/ ({c})")
            check(driver.execute_script("return document.cookie").find("pv_console") < 0, f"{role}: script cannot read the session cookie")
            if role == "privacy_officer":
                w.shot("home")
            for path in sorted(expected[role]):
                w.go("/console" + path)
                check(w.h1() not in ("", "403 Forbidden") and "Error" not in driver.title, f"{role}: {path} loads ({w.h1()})")
                w.a11y(f"{role} {path}", Axe if role in ("privacy_officer", "auditor") else None)
            if role in ("trainer", "auditor", "support", "operator"):
                w.go("/console/requests")
                check(w.h1() == "403 Forbidden" and not w.has("#register"), f"{role}: no request queue (403)")

        # 3. The privacy officer's month.
        w.sign_in(tokens["privacy_officer"])
        w.go("/console/requests")
        check(w.has("tr.overdue") and "overdue" in driver.find_element(By.CSS_SELECTOR, "tr.overdue").text,
              "the overdue request is marked")
        driver.find_element(By.ID, "type").send_keys("access")
        driver.find_element(By.ID, "customer_id").send_keys("C3")
        driver.find_element(By.ID, "channel").send_keys("email")
        w.click("#open-request")
        flash = driver.find_element(By.CSS_SELECTOR, ".flash").text
        check(flash.startswith("Opened request req_"), f"an access request is opened ({flash})")
        req = flash.split()[2]
        check("C3" not in driver.find_element(By.ID, "register").text, "the register shows no customer ID")
        rows = driver.find_elements(By.CSS_SELECTOR, "#register tbody tr")
        check(rows and "overdue" in (rows[0].get_attribute("class") or ""), "overdue requests come first")
        w.shot("requests")
        w.go(f"/console/requests/{req}")
        w.shot("request")
        w.click("#fulfil", confirm=True)
        check(driver.find_element(By.ID, "request-status").text == "done", "the access request is fulfilled")
        sha = driver.find_element(By.ID, "export-sha256").text
        check(len(sha) == 64, "the export's SHA-256 is shown")
        check("Person 2" in driver.find_element(By.ID, "export").text, "the export to send is shown")
        w.shot("fulfilled")
        # An erasure request: fulfilled, its receipt downloads.
        w.go("/console/requests")
        driver.find_element(By.ID, "type").send_keys("erasure")
        driver.find_element(By.ID, "customer_id").send_keys("C4")
        w.click("#open-request")
        ereq = driver.find_element(By.CSS_SELECTOR, ".flash").text.split()[2]
        w.go(f"/console/requests/{ereq}")
        w.click("#fulfil", confirm=True)
        check(w.has("#receipt-link"), "an erasure's receipt is offered")
        status, headers, body = http("GET", f"{base}/console/requests/{ereq}/receipt", cookie=w.cookie_header())
        receipt = json.loads(body) if status == 200 else {}
        check(status == 200 and str(receipt.get("outcome", "")).startswith("receipt:") and "attachment" in headers.get("Content-Disposition", ""),
              "the erasure receipt downloads")
        # The erased subject's page: its key shredded, the receipt, nothing else.
        w.go("/console/subject")
        driver.find_element(By.ID, "lookup-id").send_keys("C4")
        w.click("#lookup")
        check(w.has("#key-state") and driver.find_element(By.ID, "key-state").text == "shredded",
              "an erased subject's key shows as shredded")
        check(w.has("#erasure-receipt") and receipt.get("outcome", "").endswith(driver.find_element(By.ID, "erasure-receipt").text),
              "the erased subject's page names its receipt")
        check(not w.has("#purposes") and "person3@example.com" not in driver.page_source, "nothing else is shown of an erased subject")
        w.shot("subject-erased")
        # Deny with a reason.
        w.go("/console/requests")
        driver.find_element(By.ID, "type").send_keys("rectification")
        driver.find_element(By.ID, "customer_id").send_keys("C5")
        w.click("#open-request")
        dreq = driver.find_element(By.CSS_SELECTOR, ".flash").text.split()[2]
        w.go(f"/console/requests/{dreq}")
        driver.find_element(By.ID, "deny-reason").send_keys("identity not verified")
        w.click("#deny", confirm=True)
        check(f"Request {dreq} denied" in driver.find_element(By.CSS_SELECTOR, ".flash").text, "a request is denied with a reason")
        # Consent withdrawn on the subject page.
        w.go("/console/subject")
        driver.find_element(By.ID, "lookup-id").send_keys("C1")
        w.click("#lookup")
        check(w.has("#purposes") and w.has("#accesses") and w.has("#retention"), "the subject page shows purposes, retention, accesses")
        check(not w.has("#reveal"), "the privacy officer (no `get`) has no reveal")
        check("person0@example.com" not in driver.page_source, "no PII on the subject page by default")
        w.click("#consent-analytics", confirm=True)
        cell = driver.find_element(By.CSS_SELECTOR, "tr[data-purpose=analytics] .consent").text
        check(cell.startswith("withdrawn"), f"the consent is withdrawn ({cell})")
        check("withdrawn" in driver.find_element(By.ID, "timeline").text, "the timeline shows the withdrawal")
        w.shot("subject")

        # A rectification from the browser alone: open, rectify on the subject page, confirm, fulfil.
        corrected = "corrected.4711@example.org"
        w.go("/console/requests")
        driver.find_element(By.ID, "type").send_keys("rectification")
        driver.find_element(By.ID, "customer_id").send_keys("C6")
        w.click("#open-request")
        rreq = driver.find_element(By.CSS_SELECTOR, ".flash").text.split()[2]
        w.go(f"/console/requests/{rreq}")
        w.click("#to-subject")
        driver.find_element(By.ID, "lookup-id").send_keys("C6")
        w.click("#lookup")
        driver.find_element(By.ID, "rectify-field-1").send_keys("email")
        driver.find_element(By.ID, "rectify-value-1").send_keys(corrected)
        w.shot("subject-rectify")
        w.click("#rectify", confirm=True)
        flash = driver.find_element(By.CSS_SELECTOR, ".flash").text
        check(flash == "Rectified: email changed.", f"the rectification is made ({flash})")
        check(corrected not in driver.page_source and "4711" not in driver.page_source, "the corrected value is not shown back")
        # An invalid value: refused, and not shown back either.
        driver.find_element(By.ID, "rectify-field-1").send_keys("age")
        driver.find_element(By.ID, "rectify-value-1").send_keys("<b>not-a-number-9931</b>")
        w.click("#rectify", confirm=True)
        check(w.has(".error") and "not-a-number-9931" not in driver.page_source, "an invalid value is refused without echoing it")
        w.go(f"/console/requests/{rreq}")
        driver.find_element(By.ID, "done").click()
        w.click("#fulfil", confirm=True)
        check(driver.find_element(By.ID, "request-status").text == "done", "the rectification request is fulfilled from the console")

        # An objection from the browser alone: open, record it on the subject page, fulfil.
        w.go("/console/requests")
        driver.find_element(By.ID, "type").send_keys("objection")
        driver.find_element(By.ID, "customer_id").send_keys("C7")
        w.click("#open-request")
        oreq = driver.find_element(By.CSS_SELECTOR, ".flash").text.split()[2]
        w.go(f"/console/requests/{oreq}")
        w.click("#to-subject")
        driver.find_element(By.ID, "lookup-id").send_keys("C7")
        w.click("#lookup")
        check(w.has("#object-fraud_checks") and not w.has("#object-analytics"), "objection is offered for the legitimate-interest purpose only")
        w.click("#object-fraud_checks", confirm=True)
        cell = driver.find_element(By.CSS_SELECTOR, "tr[data-purpose=fraud_checks] .consent").text
        check("objection" in cell, f"the objection is recorded ({cell})")
        w.go(f"/console/requests/{oreq}")
        w.click("#fulfil", confirm=True)
        check(driver.find_element(By.ID, "request-status").text == "done"
              and "objection:fraud_checks" in driver.find_element(By.ID, "outcome").text, "the objection request is fulfilled from the console")

        # Forged CSRF tokens on the new forms: refused.
        w.go("/console/subject")
        driver.find_element(By.ID, "lookup-id").send_keys("C8")
        w.click("#lookup")
        driver.execute_script("document.querySelector('form[action=\"/console/subject/objection\"] input[name=csrf]').value = 'A'.repeat(43);")
        w.click("#object-fraud_checks", confirm=True)
        check(w.h1() == "403 Forbidden", "a forged CSRF token on the objection form is refused (403)")
        w.go("/console/subject")
        driver.find_element(By.ID, "lookup-id").send_keys("C8")
        w.click("#lookup")
        check("objection" not in driver.find_element(By.CSS_SELECTOR, "tr[data-purpose=fraud_checks] .consent").text,
              "nothing recorded on a forged CSRF token")
        driver.execute_script("document.querySelector('form[action=\"/console/subject/rectify\"] input[name=csrf]').value = 'A'.repeat(43);")
        driver.find_element(By.ID, "rectify-field-1").send_keys("email")
        driver.find_element(By.ID, "rectify-value-1").send_keys("forged@example.org")
        w.click("#rectify", confirm=True)
        check(w.h1() == "403 Forbidden", "a forged CSRF token on the rectify form is refused (403)")
        w.go("/console/policy")
        w.shot("policy")
        w.go("/console/keys")
        w.shot("keys")
        w.go("/console/budget")
        check(w.has("#budget-chart"), "the budget page draws its chart")
        w.shot("budget")

        # 5. Forged and missing CSRF tokens: 403, in the browser and outside it.
        w.go("/console/keys")
        before = driver.find_element(By.ID, "active-version").text
        driver.execute_script("document.querySelector('form[action=\"/console/keys/rotate\"] input[name=csrf]').value = 'A'.repeat(43);")
        driver.find_element(By.ID, "confirm-rotate").click()
        w.click("#rotate", confirm=True)
        check(w.h1() == "403 Forbidden", "a forged CSRF token is refused (403)")
        w.go("/console/keys")
        check(driver.find_element(By.ID, "active-version").text == before, "nothing rotated on a forged CSRF token")
        status, _, _ = http("POST", f"{base}/console/keys/rotate", cookie=w.cookie_header(), form={"confirm": "yes"})
        check(status == 403, f"a missing CSRF token is refused (403, got {status})")
        driver.find_element(By.ID, "confirm-rotate").click()
        w.click("#rotate", confirm=True)
        check(driver.find_element(By.ID, "active-version").text != before, "rotation with the session's CSRF token works")
        w.click("form.signout button")
        check(driver.current_url.endswith("/console/sign-in") and driver.get_cookie("pv_console") is None, "signing out ends the session")

        # 4. The auditor's review.
        w.sign_in(tokens["auditor"])
        w.go("/console/audit")
        check(not w.has("#reveal"), "the auditor has no reveal")
        w.go("/console/budget")
        check(w.has("#burndown-analytics polyline") and w.has("#releases tbody tr"), "the auditor sees the burn-down and the releases")
        w.shot("budget-auditor")
        w.go("/console/audit")
        w.click("#verify-now")
        check("ok" in driver.find_element(By.ID, "verification").get_attribute("class"), "the audit log verifies")
        w.shot("audit")
        status, _, export = http("GET", f"{base}/console/audit/export?format=jsonl", cookie=w.cookie_header())
        check(status == 200 and export.count(b"\n") > 10, "the JSON Lines export downloads")
        _, _, pem = http("GET", f"{base}/console/audit/public-key.pem", cookie=w.cookie_header())

        def verify_export(text):
            w.go("/console/audit")
            driver.execute_script("document.getElementById('export-text').value = arguments[0];"
                                  "document.getElementById('key-text').value = arguments[1];", text, pem.decode())
            w.click("#verify-export")
            return driver.find_element(By.ID, "export-result")

        r = verify_export(export.decode())
        check("ok" in r.get_attribute("class"), f"the downloaded export verifies ({r.text[:120]})")
        lines = export.decode().split("\n")
        target = next(i for i, l in enumerate(lines) if '"console-privacy_officer"' in l)
        lines[target] = lines[target].replace('"console-privacy_officer"', '"someone-else"', 1)
        r = verify_export("\n".join(lines))
        check("bad" in r.get_attribute("class") and "first bad entry" in r.text, f"a tampered export is caught ({r.text[:160]})")
        w.shot("audit-tampered")
        w.go("/console/audit?action=requests.&actor=console-privacy_officer")
        check(len(driver.find_elements(By.CSS_SELECTOR, "#entries tbody tr")) >= 3, "audit filters by actor and action")
        # Sign-in and sign-out are on the record (never the token).
        w.go("/console/audit?action=auth.sign&actor=console-privacy_officer&size=200")
        actions = [r.find_elements(By.TAG_NAME, "td")[4].text for r in driver.find_elements(By.CSS_SELECTOR, "#entries tbody tr")]
        check("auth.sign_in" in actions and "auth.sign_out" in actions, f"sign-in and sign-out entries are listed ({sorted(set(actions))})")
        check(tokens["privacy_officer"] not in driver.page_source, "no token on the audit page")
        # Paging: older, then newer again.
        def seqs():
            return [int(r.find_elements(By.TAG_NAME, "td")[0].text) for r in driver.find_elements(By.CSS_SELECTOR, "#entries tbody tr")]
        w.go("/console/audit?size=10")
        p1 = seqs()
        check(len(p1) == 10 and p1 == sorted(p1, reverse=True) and not w.has("#page-newer"), f"the newest page shows 10 entries ({p1})")
        w.click("#page-older")
        p2 = seqs()
        check(len(p2) == 10 and max(p2) == min(p1) - 1, f"the older page continues below it ({p2})")
        w.shot("audit-paged")
        w.click("#page-newer")
        p3 = seqs()
        check(p3 and min(p3) == max(p2) + 1, f"the newer page comes back ({p3})")
        w.go("/console/audit?size=100000")
        check(w.h1() == "400 Bad Request", "the page size is bounded")
        # The auditor (no `rectify`, no `consent`): no forms, and 403 on a direct POST.
        w.go("/console/audit")
        csrf = driver.find_element(By.CSS_SELECTOR, "form.signout input[name=csrf]").get_attribute("value")
        for path, form in (("/console/subject/rectify", {"customer_id": "C1", "field1": "email", "value1": "a@example.org"}),
                           ("/console/subject/objection", {"customer_id": "C1", "purpose": "fraud_checks"})):
            status, _, _ = http("POST", base + path, cookie=w.cookie_header(), form={"csrf": csrf, **form})
            check(status == 403, f"the auditor's direct POST {path} is refused (403, got {status})")

        # The support role may reveal, with a purpose (audited as `get`).
        w.sign_in(tokens["support"])
        w.go("/console/subject")
        driver.find_element(By.ID, "lookup-id").send_keys("C2")
        w.click("#lookup")
        check(w.has("#reveal") and not w.has("#purposes"), "support sees reveal, not the access report")
        check(not w.has("#rectify") and not w.has(".objection"), "support has no rectify or objection form")
        driver.find_element(By.ID, "reveal-purpose").send_keys("customer_support")
        w.click("#reveal")
        check("person1@example.com" in driver.find_element(By.ID, "revealed").text, "reveal shows the profile for the purpose")
        w.shot("subject-reveal")

        # A revoked token ends its session.
        w.sign_in(tokens["trainer"])
        tid = [t for t in json.loads(cli(["tokens", "list", "--tokens", tokens_file, "--json"] + opts, env).stdout)["tokens"]
               if t["role"] == "trainer"][0]["id"]
        cli(["tokens", "revoke", "--tokens", tokens_file, tid] + opts, env)
        w.go("/console/budget")
        check(driver.current_url.endswith("/console/sign-in?ended=1"), "a revoked token's session ends")

        # A request without a session (cookies gone) goes to the sign-in page.
        driver.delete_all_cookies()
        w.go("/console/audit")
        check(driver.current_url.endswith("/console/sign-in"), "no session: the sign-in page")

        # 6. JavaScript off: the pages still read.
        driver.quit()
        driver = browser(javascript=False)
        w = Walk(driver, base, None)
        w.sign_in(tokens["privacy_officer"])
        w.go("/console/requests")
        check(len(driver.find_elements(By.CSS_SELECTOR, "#register tbody tr")) >= 3, "the register reads with JavaScript off")
    except TimeoutException as e:
        failed.append(f"timed out waiting: {e.msg}")
        say(f"FAIL: timed out waiting ({e.msg})")
    finally:
        if driver:
            driver.quit()
        if proc:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if postgres:
            postgres[4]()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{passed} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
