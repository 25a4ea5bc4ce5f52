#!/usr/bin/env python3
"""The Python model reader against `profilectl score` (issue 24; scripts/models-python-test.sh
runs this in its virtual environment).

On a fresh store (a fresh keyring, the repository's policy with random_forest allowed), a
synthetic population whose values this script knows: 300 customers with age, annual income and
purchase events. It trains linear and logistic regression, a random forest and k-means with
profilectl (derived features and targets included), scores every customer with
`profilectl score --subjects` and `--all --top`, and checks python/profilevault_models on the
same feature values: the same scores to 1e-9 (the same segments), the same unscored customers,
the same top 10; to_sklearn() agrees too when scikit-learn is installed. Also: the reader loads a
recommender artifact, needs no keyring, refuses to score it, and refuses a broken artifact.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

import profilevault_models as pvm

P = os.environ.get("PROFILECTL", ".build/debug/profilectl")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 300
TOL = 1e-9


def fail(msg):
    print(f"models-python-test: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def say(msg):
    print(f"models-python-test: {msg}", flush=True)


def cli(args, env, ok=(0,)):
    r = subprocess.run([P] + args, env=env, capture_output=True, text=True)
    if r.returncode not in ok:
        fail(f"profilectl {' '.join(args[:2])}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def population():
    """Each customer's attributes and events (the values the script knows)."""
    people = []
    for i in range(N):
        age = 18 + (i * 37) % 80
        income = float((i * 7919) % 250000) + 0.25 * (i % 4)
        events = []
        for j in range(i % 6):
            day = 1 + (i + 3 * j) % 28
            month = 9 if j % 2 == 0 else 10
            events.append(("purchase", f"SKU-{(i + j * 5) % 17}", round(2.5 + (i * j) % 40 + 0.5 * j, 2),
                           f"2026-{month:02d}-{day:02d}T12:00:00Z"))
        people.append({"id": f"P{i}", "age": age, "annual_income": income, "events": events})
    return people


def derived(person, definition):
    """A derived feature as docs/models.md defines it: the aggregate over the window, 0 without
    events, clamped to the bounds (the times here are all whole days in 2026, compared as text)."""
    evs = [e for e in person["events"] if e[0] == definition["events"]
           and (definition.get("from") is None or e[3] >= definition["from"])
           and (definition.get("before") is None or e[3] < definition["before"])]
    agg = definition["aggregate"]
    if agg == "sum":
        v = 0.0
        for e in evs:
            v += e[2]
    elif agg == "count":
        v = float(len(evs))
    else:
        v = float(len({e[1] for e in evs}))
    lo, hi = definition["bounds"]
    return min(hi, max(lo, v))


def features(model, person):
    row = []
    for f in model.features:
        if f in model.derived:
            row.append(derived(person, model.derived[f]))
        else:
            row.append(float(person[f]))
    return row


JOBS = {
    "linear": """job: spend
purpose: model_training
model: linear_regression
derived:
  spend: { events: purchase, aggregate: sum, bounds: [0, 300] }
  orders: { events: purchase, aggregate: count, before: 2026-10-01, bounds: [0, 5] }
features: [age, annual_income, orders]
target: spend
epsilon: 1
""",
    "logistic": """job: churn
purpose: model_training
model: logistic_regression
derived:
  active: { events: purchase, aggregate: count, from: 2026-10-01, bounds: [0, 1] }
  items: { events: purchase, aggregate: distinct_items, bounds: [0, 4] }
features: [age, annual_income, items]
target: active
epsilon: 1
""",
    "forest": """job: propensity
purpose: model_training
model: random_forest
derived:
  active: { events: purchase, aggregate: count, from: 2026-10-01, bounds: [0, 1] }
features: [age, annual_income]
target: active
params: { trees: 12, depth: 4 }
epsilon: 1
""",
    "kmeans": """job: segments
purpose: model_training
model: kmeans
features: [age, annual_income]
params: { k: 4 }
epsilon: 1
""",
}


def main():
    if not os.access(P, os.X_OK):
        fail(f"no executable at {P} (build first)")
    work = tempfile.mkdtemp(prefix="pv-models-python.")
    try:
        run(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work):
    policies = os.path.join(work, "policies")
    shutil.copytree(os.path.join(REPO, "policies"), policies)
    pol = os.path.join(policies, "policy.yaml")
    text = open(pol).read()
    shipped = "models: [segments, kmeans, linear_regression, logistic_regression, recommender]"
    if shipped not in text:
        fail("the shipped policy's model_training models changed; update this script")
    open(pol, "w").write(text.replace(shipped, shipped[:-1] + ", random_forest]"))
    keys = os.path.join(work, "keyring.json")
    env = {**os.environ, "PROFILEVAULT_STORE": os.path.join(work, "store.sqlite"), "PROFILEVAULT_KEYS": keys,
           "PROFILEVAULT_POLICY": policies, "PROFILEVAULT_LOG_LEVEL": "error"}
    cli(["keys", "generate", "--out", keys], env)
    cli(["init"], env)
    people = population()
    with open(os.path.join(work, "profiles.csv"), "w") as f:
        f.write("customer_id,email,full_name,phone,birth_date,age,gender,country,annual_income\n")
        for i, p in enumerate(people):
            f.write(f"{p['id']},{p['id'].lower()}@example.com,Person {i},+49 30 {1000 + i},1980-01-0{1 + i % 9},"
                    f"{p['age']},female,DE,{p['annual_income']!r}\n")
    with open(os.path.join(work, "events.csv"), "w") as f:
        f.write("customer_id,kind,item,value,time\n")
        for p in people:
            for e in p["events"]:
                f.write(f"{p['id']},{e[0]},{e[1]},{e[2]!r},{e[3]}\n")
    cli(["ingest", "profiles", os.path.join(work, "profiles.csv"), "--role", "operator"], env)
    cli(["ingest", "events", os.path.join(work, "events.csv"), "--role", "operator"], env)
    # Everyone consents but every 25th customer; P7 is restricted, P8 erased.
    consenting = [p["id"] for i, p in enumerate(people) if i % 25 != 0]
    with open(os.path.join(work, "consenting.txt"), "w") as f:
        f.write("\n".join(consenting) + "\n")
    cli(["consent", "grant", "--purpose", "model_training", "--subjects", os.path.join(work, "consenting.txt"),
         "--role", "privacy_officer"], env)
    asked = [p["id"] for p in people] + ["NOBODY"]
    with open(os.path.join(work, "asked.txt"), "w") as f:
        f.write("\n".join(asked) + "\n")

    trained = {}
    for name, job in JOBS.items():
        path = os.path.join(work, f"{name}.yaml")
        open(path, "w").write(job)
        out = os.path.join(work, f"{name}.json")
        cli(["train", path, "--out", out, "--role", "trainer"], env)
        trained[name] = out
    cli(["restrict", "--subject", "P7", "--role", "privacy_officer"], env)
    cli(["erase", "--subject", "P8", "--role", "privacy_officer"], env)
    unscored = {p["id"] for i, p in enumerate(people) if i % 25 == 0} | {"P7", "P8", "NOBODY"}
    by_id = {p["id"]: p for p in people}

    try:
        import sklearn  # noqa: F401
        have_sklearn = True
    except ImportError:
        have_sklearn = False
        say("scikit-learn is not installed: to_sklearn() is not checked")

    compared = 0
    for name, path in trained.items():
        model = pvm.load(path)   # no keyring anywhere near the reader
        r = cli(["score", "--model", path, "--subjects", os.path.join(work, "asked.txt"), "--role", "app"], env)
        lines = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
        if [l["customer_id"] for l in lines] != asked:
            fail(f"{name}: score did not answer every customer in order")
        served = [l for l in lines if "error" not in l]
        if {l["customer_id"] for l in lines if "error" in l} != unscored:
            fail(f"{name}: the unscored customers differ from the unconsented, restricted, erased and unknown ones")
        X = np.array([features(model, by_id[l["customer_id"]]) for l in served])
        py = model.predict(X)
        key = "segment" if model.kind == "kmeans" else "score"
        swift = np.array([l[key] for l in served], dtype=np.float64)
        if model.kind == "kmeans":
            if not np.array_equal(py, swift.astype(np.int64)):
                fail(f"{name}: segments differ from profilectl score's")
        else:
            worst = float(np.max(np.abs(py - swift)))
            if not worst <= TOL:
                fail(f"{name}: the reader's scores differ from profilectl score's by up to {worst:.3g}")
            if model.kind in ("logistic_regression", "random_forest"):
                proba = model.predict_proba(X)
                if not np.allclose(proba[:, 1], swift, rtol=0, atol=TOL) or not np.allclose(proba.sum(axis=1), 1.0):
                    fail(f"{name}: predict_proba disagrees")
            # --all --top 10: the same ten highest.
            top = cli(["score", "--model", path, "--all", "--top", "10", "--role", "app"], env)
            got = [json.loads(l) for l in top.stdout.splitlines() if l.strip()]
            want = sorted(py, reverse=True)[:10]
            if len(got) != 10 or not np.allclose([g["score"] for g in got], want, rtol=0, atol=TOL):
                fail(f"{name}: --all --top 10 is not the ten highest scores")
            if any(g["customer_id"] in unscored for g in got):
                fail(f"{name}: --all scored a customer it may not serve")
        if have_sklearn and model.kind in ("linear_regression", "logistic_regression", "kmeans"):
            est = model.to_sklearn()
            prepared = model.prepare(X)
            if model.kind == "linear_regression":
                sk = est.predict(prepared)
            elif model.kind == "logistic_regression":
                sk = est.predict_proba(prepared)[:, 1]
            else:
                sk = est.predict(prepared)
            if model.kind == "kmeans":
                # scikit-learn computes distances another way: only a near-tie may differ.
                d = model.transform(X) ** 2
                rows = np.arange(len(sk))
                if not np.all(np.abs(d[rows, sk] - d[rows, py]) <= 1e-12):
                    fail(f"{name}: to_sklearn() assigns other segments")
            elif not np.max(np.abs(sk - py)) <= TOL:
                fail(f"{name}: to_sklearn() predicts otherwise (up to {np.max(np.abs(sk - py)):.3g})")
        compared += len(served)
        say(f"{name} ({model.kind}): {len(served)} customers scored alike by profilectl and the reader")

    # The reader loads any artifact without a secret, and refuses to score what score refuses.
    reco = os.path.join(work, "reco.yaml")
    open(reco, "w").write("job: reco\npurpose: model_training\nmodel: recommender\nevents: purchase\nepsilon: 1\n")
    cli(["train", reco, "--out", os.path.join(work, "reco.json"), "--role", "trainer"], env)
    rm = pvm.load(os.path.join(work, "reco.json"))
    if rm.kind != "recommender" or rm.problem() is None:
        fail("the reader did not load a recommender, or would score it")
    r = cli(["score", "--model", os.path.join(work, "reco.json"), "--subject", "P1", "--role", "app"], env, ok=(65,))
    broken = json.load(open(trained["forest"]))
    broken["trees"][0]["leaf_probabilities"] = broken["trees"][0]["leaf_probabilities"][:3]
    try:
        pvm.from_dict(broken).predict([[40, 1000]])
        fail("the reader scored a forest with a short leaf_probabilities")
    except pvm.ArtifactError:
        pass
    say(f"OK: {compared} scores compared across {len(trained)} models (tolerance {TOL})")


if __name__ == "__main__":
    main()
