#!/usr/bin/env python3
"""Evaluate ProfileVault's private models on the real data sets in ../shared/data.

Every private model is trained by `profilectl train` on a real store (the data ingested,
encrypted, with its audit log), so what is measured is the product a user runs, end to end.
Baselines, on the same rows and the same public bounds:
  - the non-private version of the model (scikit-learn; for the recommender, the same
    item-based model trained by profilectl at epsilon 10^4 (EXACT), i.e. without noise to speak of);
  - IBM diffprivlib 0.6.6 where it has the model (KMeans, LogisticRegression, LinearRegression);
  - for the recommender, a popularity baseline.

Runs: epsilon 0.1, 1 and 10, seeds 0..9 (--seeds). profilectl draws its noise from OpenSSL's
CSPRNG, so its runs are independent repetitions; the seed fixes scikit-learn's and
diffprivlib's randomness. Writes bench/models/results.json, docs/img/models-*.png and the
results section of docs/models.md (between the EVALUATION markers).

    python3 -m venv bench/models/.venv
    bench/models/.venv/bin/pip install -r bench/models/requirements.txt
    swift build -c release --product profilectl
    bench/models/.venv/bin/python bench/models/evaluate.py            # about 10 minutes
    bench/models/.venv/bin/python bench/models/evaluate.py --quick    # 3 seeds, a smoke run
"""
import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict

import numpy as np
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")
EXAMPLES = os.path.join(ROOT, "policies", "examples")
EPSILONS = [0.1, 1.0, 10.0]     # --epsilons changes it
SPLIT_SEED = 20261122          # the train/test splits are fixed; runs vary the noise
EXACT = 1e4                    # the "exact counts" jobs: noise scales of 10^-3 or less; a policy's
                               # budget is at most 10^6, so the exact jobs cannot use 10^6 each

warnings.filterwarnings("ignore")


# ---------------------------------------------------------------------------------------------
# A store driven through profilectl

class Store:
    """A fresh store in its own folder: example schema, an evaluation policy, a new keyring."""

    def __init__(self, profilectl, workdir, name, schema_file, may_read, models, catalog=None):
        self.pv = profilectl
        self.dir = os.path.join(workdir, name)
        os.makedirs(os.path.join(self.dir, "policies"))
        shutil.copy(schema_file, os.path.join(self.dir, "policies", "schema.yaml"))
        # A job names a catalog the policy declares (items_from: products), never a file: the
        # catalog is copied into the policy directory and declared there.
        catalogs = ""
        if catalog:
            os.makedirs(os.path.join(self.dir, "policies", "catalogs"))
            shutil.copy(catalog, os.path.join(self.dir, "policies", "catalogs", "products.tsv"))
            catalogs = "catalogs:\n  products: catalogs/products.tsv\n"
        # The example policies hold realistic budgets (epsilon 10 per 30 days); 300 training
        # runs need a larger one (the policy's largest, 10^6: the "exact" jobs run at EXACT;
        # delta 10^-3: a thousand jobs without a catalog at the default 10^-6). Everything
        # else (gate, consent-free legal basis) is as shipped.
        with open(os.path.join(self.dir, "policies", "policy.yaml"), "w") as f:
            f.write(f"""version: "evaluation"
purposes:
  evaluation:
    data_use: analytics.reporting
    legal_basis: legitimate_interest
    may_read: [{", ".join(may_read)}]
    models: [{", ".join(models)}]
    dp_budget: {{ epsilon: 1000000, delta: 0.001, period: 30d }}
roles:
  operator: [ingest]
  app: [serve_recommendations, score]
  trainer: [query, train]
""" + catalogs)
        self.env = dict(os.environ,
                        PROFILEVAULT_STORE=os.path.join(self.dir, "store.sqlite"),
                        PROFILEVAULT_KEYS=os.path.join(self.dir, "keys.json"),
                        PROFILEVAULT_POLICY=os.path.join(self.dir, "policies"))
        self.run("keys", "generate", "--out", self.env["PROFILEVAULT_KEYS"])
        self.run("init")

    def run(self, *args, role=None):
        cmd = [self.pv, *args] + (["--role", role] if role else [])
        p = subprocess.run(cmd, env=self.env, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"evaluate: {' '.join(cmd[1:])} failed ({p.returncode}): {p.stderr.strip()}")
        return p.stdout

    def ingest(self, what, rows, header):
        path = os.path.join(self.dir, f"{what}.csv")
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
        self.run("ingest", what, path, role="operator")

    def train(self, job):
        path = os.path.join(self.dir, "job.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(job, f, sort_keys=False)
        out = os.path.join(self.dir, "model.json")
        if os.path.exists(out):
            os.remove(out)           # train refuses to replace a model file (--force would)
        t0 = time.perf_counter()
        self.run("train", path, "--out", out, role="trainer")
        seconds = time.perf_counter() - t0
        with open(out) as f:
            return json.load(f), seconds

    def recommend(self, model, ids, top):
        mpath = os.path.join(self.dir, "model.json")
        with open(mpath, "w") as f:
            json.dump(model, f)
        ipath = os.path.join(self.dir, "ids.txt")
        with open(ipath, "w") as f:
            f.write("\n".join(ids) + "\n")
        out = self.run("recommend", "--model", mpath, "--subjects", ipath, "--top", str(top), "--json", role="app")
        recs = {}
        for line in out.splitlines():
            if line.strip():
                r = json.loads(line)
                recs[r["customer_id"]] = r["items"]
        return recs


def schema_bounds(schema_file):
    with open(schema_file) as f:
        s = yaml.safe_load(f)
    b = {}
    for name, spec in s["fields"].items():
        if "bounds" in spec:
            b[name] = tuple(float(x) for x in spec["bounds"])
        elif spec.get("type") == "bool":
            b[name] = (0.0, 1.0)
    return b


def unit_scale(X, bounds):
    lo = np.array([b[0] for b in bounds])
    hi = np.array([b[1] for b in bounds])
    return (np.clip(X, lo, hi) - lo) / (hi - lo)


def summarize(values):
    v = np.array(values, dtype=float)
    return {"median": float(np.median(v)), "q25": float(np.percentile(v, 25)), "q75": float(np.percentile(v, 75)),
            "min": float(v.min()), "max": float(v.max()), "runs": len(v)}


# ---------------------------------------------------------------------------------------------
# Data sets

def load_bank():
    path = os.path.join(DATA, "bank-marketing", "bank-train.csv")
    with open(path) as f:
        rows = list(csv.reader(f, delimiter=";"))
    header, rows = rows[0], rows[1:]
    ids = [f"B-{i:06d}" for i in range(1, len(rows) + 1)]
    return header, rows, ids


def load_mall():
    path = os.path.join(DATA, "mall-customers", "Mall_Customers.csv")
    with open(path) as f:
        rows = list(csv.reader(f))
    return rows[1:]


def load_retail():
    path = os.path.join(DATA, "online-retail", "online_retail_2010-12_2011-09.csv")
    with open(path) as f:
        r = csv.reader(f)
        next(r)
        return [row for row in r if row[6]]      # rows without a CustomerID have no subject


# ---------------------------------------------------------------------------------------------
# k-means

def inertia(X, centroids):
    d = ((X[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    return float(d.min(axis=1).sum())


def eval_kmeans(name, store, X_units, features, bounds, k, seeds, log, extra=None):
    from sklearn.cluster import KMeans
    from diffprivlib.models import KMeans as DPKMeans
    d = X_units.shape[1]
    base = {s: KMeans(n_clusters=k, n_init=10, random_state=s).fit(X_units).inertia_ for s in seeds}
    best = min(base.values())
    out = {"data": name, "subjects": int(X_units.shape[0]), "features": features, "k": k,
           "sklearn_inertia": best, "by_epsilon": {}}
    for eps in EPSILONS:
        ours, dpl, secs = [], [], []
        for s in seeds:
            art, sec = store.train({"job": f"kmeans-{name}", "purpose": "evaluation", "model": "kmeans",
                                    "features": features, "params": dict({"k": k}, **(extra or {})), "epsilon": eps})
            C = unit_scale(np.array(art["centroids"], dtype=float), bounds)
            ours.append(inertia(X_units, C) / base[s])
            secs.append(sec)
            m = DPKMeans(n_clusters=k, epsilon=eps, bounds=(np.zeros(d), np.ones(d)), random_state=s).fit(X_units)
            dpl.append(inertia(X_units, m.cluster_centers_) / base[s])
        out["by_epsilon"][str(eps)] = {"profilevault": summarize(ours), "diffprivlib": summarize(dpl),
                                       "train_seconds": summarize(secs)}
        log(f"kmeans {name} eps={eps}: ratio ours {np.median(ours):.3f}, diffprivlib {np.median(dpl):.3f}")
    return out


# ---------------------------------------------------------------------------------------------
# Regressions

def artifact_predict(art, X):
    """What Regression.predict computes: inputs clamped to the artifact's feature bounds."""
    b = np.array(art["feature_bounds"], dtype=float)
    return np.clip(X, b[:, 0], b[:, 1]) @ np.array(art["coefficients"]) + art["intercept"]


def auc(y, score):
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(y, score))


def log_loss(y, p):
    p = np.clip(np.asarray(p, dtype=float), 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def reliability(y, p, bins=10):
    """Ten equal-width bins of the predicted probability: per bin, the test rows in it, their
    mean prediction and the observed rate of y = 1 (bins without rows left out)."""
    p = np.asarray(p, dtype=float)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        if m.any():
            out.append({"bin": [b / bins, (b + 1) / bins], "rows": int(m.sum()), "predicted": float(p[m].mean()), "observed": float(y[m].mean())})
    return out


def spread(values):
    """Mean, 25th and 75th percentile and their gap (the spread over runs)."""
    v = np.array(values, dtype=float)
    q25, q75 = float(np.percentile(v, 25)), float(np.percentile(v, 75))
    return {"mean": float(v.mean()), "q25": q25, "q75": q75, "iqr": q75 - q25, "min": float(v.min()), "max": float(v.max()), "runs": len(v)}


def eval_logistic(store, Xtr, ytr, Xte, yte, features, bounds, seeds, log):
    """AUC ratio to the non-private model (the table), and, at every epsilon, the raw test AUC
    (mean, 25th-75th percentile over the runs), the log loss and a reliability table (the first
    run) for ProfileVault, diffprivlib and the non-private model."""
    from sklearn.linear_model import LogisticRegression
    from diffprivlib.models import LogisticRegression as DPLogistic
    Ztr, Zte = 2 * unit_scale(Xtr, bounds) - 1, 2 * unit_scale(Xte, bounds) - 1
    sk = LogisticRegression(max_iter=2000).fit(Ztr, ytr)
    base = auc(yte, sk.decision_function(Zte))
    p_sk = sk.predict_proba(Zte)[:, 1]
    out = {"data": "bank-marketing", "target": "y", "features": features, "train": int(len(ytr)), "test": int(len(yte)),
           "sklearn_auc": base, "sklearn_log_loss": log_loss(yte, p_sk), "sklearn_reliability": reliability(yte, p_sk),
           "test_rate": float(yte.mean()), "by_epsilon": {}}
    norm = math.sqrt(len(features))         # every row of Z lies in [-1, 1]^d: a data-independent norm bound
    for eps in EPSILONS:
        ours, dpl, ours_auc, dpl_auc, ours_ll, dpl_ll = [], [], [], [], [], []
        ours_rel = dpl_rel = None
        for s in seeds:
            art, _ = store.train({"job": "bank-subscribe", "purpose": "evaluation", "model": "logistic_regression",
                                  "features": features, "target": "y", "epsilon": eps})
            score = artifact_predict(art, Xte)
            prob = 1 / (1 + np.exp(-score))
            a = auc(yte, score)
            ours.append(a / base)
            ours_auc.append(a)
            ours_ll.append(log_loss(yte, prob))
            ours_rel = ours_rel or reliability(yte, prob)
            m = DPLogistic(epsilon=eps, data_norm=norm, random_state=s, max_iter=2000).fit(Ztr, ytr)
            a = auc(yte, m.decision_function(Zte))
            dpl.append(a / base)
            dpl_auc.append(a)
            pd = m.predict_proba(Zte)[:, 1]
            dpl_ll.append(log_loss(yte, pd))
            dpl_rel = dpl_rel or reliability(yte, pd)
        out["by_epsilon"][str(eps)] = {"profilevault": summarize(ours), "diffprivlib": summarize(dpl),
                                       "profilevault_auc": spread(ours_auc), "diffprivlib_auc": spread(dpl_auc),
                                       "profilevault_log_loss": spread(ours_ll), "diffprivlib_log_loss": spread(dpl_ll),
                                       "profilevault_reliability": ours_rel, "diffprivlib_reliability": dpl_rel}
        log(f"logistic bank eps={eps}: AUC ours mean {np.mean(ours_auc):.4f} [{np.percentile(ours_auc, 25):.4f}, {np.percentile(ours_auc, 75):.4f}] "
            f"log loss {np.mean(ours_ll):.4f}; diffprivlib mean {np.mean(dpl_auc):.4f} [{np.percentile(dpl_auc, 25):.4f}, {np.percentile(dpl_auc, 75):.4f}] "
            f"log loss {np.mean(dpl_ll):.4f}; non-private {base:.4f} log loss {out['sklearn_log_loss']:.4f}")
    return out


def forest_predict(art, X, features):
    """P(y = 1) from a random_forest artifact: the mean over trees of the leaf probability."""
    col = {f: j for j, f in enumerate(features)}
    out = np.zeros(len(X))
    for t in art["trees"]:
        leaf = np.zeros(len(X), dtype=int)
        for l, (f, c) in enumerate(zip(t["features"], t["cuts"])):
            leaf |= (X[:, col[f]] >= c).astype(int) << l
        out += np.array(t["leaf_probabilities"])[leaf]
    return out / len(art["trees"])


def eval_forest(store, Xtr, ytr, Xte, yte, features, bounds, seeds, log, params):
    """Random forest from noisy leaf counts against diffprivlib's RandomForestClassifier (same
    trees and depth), ProfileVault's logistic regression, and scikit-learn's forest, by AUC."""
    from sklearn.ensemble import RandomForestClassifier
    from diffprivlib.models import RandomForestClassifier as DPForest
    trees, depth = int(params.get("trees", 30)), int(params.get("depth", 5))
    base = auc(yte, RandomForestClassifier(n_estimators=100, random_state=0).fit(Xtr, ytr).predict_proba(Xte)[:, 1])
    out = {"data": "bank-marketing", "target": "y", "features": features, "params": params, "train": int(len(ytr)), "test": int(len(yte)),
           "sklearn_forest_auc": base, "by_epsilon": {}}
    lo, hi = np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])
    for eps in EPSILONS:
        ours, dpl, logit = [], [], []
        for s in seeds:
            art, _ = store.train({"job": "bank-propensity", "purpose": "evaluation", "model": "random_forest",
                                  "features": features, "target": "y", "params": params, "epsilon": eps})
            ours.append(auc(yte, forest_predict(art, Xte, features)))
            art, _ = store.train({"job": "bank-subscribe", "purpose": "evaluation", "model": "logistic_regression",
                                  "features": features, "target": "y", "epsilon": eps})
            logit.append(auc(yte, artifact_predict(art, Xte)))
            m = DPForest(n_estimators=trees, max_depth=depth, epsilon=eps, bounds=(lo, hi), classes=[0, 1], random_state=s)
            m.fit(np.clip(Xtr, lo, hi), ytr)
            dpl.append(auc(yte, m.predict_proba(np.clip(Xte, lo, hi))[:, 1]))
        out["by_epsilon"][str(eps)] = {"profilevault": summarize(ours), "profilevault_logistic": summarize(logit), "diffprivlib": summarize(dpl)}
        log(f"forest bank eps={eps}: AUC ours {np.median(ours):.3f}, our logistic {np.median(logit):.3f}, diffprivlib forest {np.median(dpl):.3f} (sklearn forest {base:.3f})")
    return out


def r2(y, pred):
    return float(1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def eval_linear(store, job, Xtr, ytr, Xte, yte, xbounds, ybounds, seeds, log, label):
    from sklearn.linear_model import LinearRegression
    from diffprivlib.models import LinearRegression as DPLinear
    clipX = lambda X: np.clip(X, [b[0] for b in xbounds], [b[1] for b in xbounds])
    clipy = lambda y: np.clip(y, ybounds[0], ybounds[1])
    base_model = LinearRegression().fit(clipX(Xtr), clipy(ytr))
    base = r2(yte, base_model.predict(clipX(Xte)))
    out = {"data": label, "target": job["target"], "features": job["features"], "train": int(len(ytr)), "test": int(len(yte)),
           "sklearn_r2": base, "by_epsilon": {}}
    for eps in EPSILONS:
        ours, dpl = [], []
        for s in seeds:
            art, _ = store.train(dict(job, epsilon=eps))
            pred = artifact_predict(art, Xte)
            ours.append(r2(yte, pred) / base)
            m = DPLinear(epsilon=eps, bounds_X=([b[0] for b in xbounds], [b[1] for b in xbounds]), bounds_y=ybounds,
                         random_state=s).fit(clipX(Xtr), clipy(ytr))
            dpl.append(r2(yte, m.predict(clipX(Xte))) / base)
        out["by_epsilon"][str(eps)] = {"profilevault": summarize(ours), "diffprivlib": summarize(dpl)}
        log(f"linear {label} eps={eps}: R2 ratio ours {np.median(ours):.3f} (min {min(ours):.3f}), diffprivlib {np.median(dpl):.3f} (min {min(dpl):.3g})")
    return out


# ---------------------------------------------------------------------------------------------
# Recommender

def rank_metrics(recs, truth, top):
    hits, ndcg = [], []
    for cid, rel in truth.items():
        items = recs.get(cid, [])[:top]
        hits.append(1.0 if any(i in rel for i in items) else 0.0)
        dcg = sum(1 / math.log2(r + 2) for r, i in enumerate(items) if i in rel)
        idcg = sum(1 / math.log2(r + 2) for r in range(min(top, len(rel))))
        ndcg.append(dcg / idcg)
    return float(np.mean(hits)), float(np.mean(ndcg))


# The non-private item-based CF of the goal: the last 10 distinct items of each customer, the 300
# most popular items as vocabulary (fixed, whatever the private model's parameters are).
NONPRIVATE_CF = {"max_items_per_subject": 10, "vocabulary_size": 300}


def itemcf_cosine(train_items, ids, top):
    """Non-private item-based collaborative filtering (cosine), numpy: the binary
    customer x item matrix of the training purchases, sim = cosine between item columns (all
    items, no pruning), a customer's score for item j = sum of sim(i, j) over the items i the
    customer bought; the top `top` items the customer does not own (ties: more popular first)."""
    items = sorted({i for s in train_items.values() for i in s})
    col = {i: j for j, i in enumerate(items)}
    custs = sorted(train_items)
    X = np.zeros((len(custs), len(items)), dtype=np.float32)
    for r, c in enumerate(custs):
        for i in train_items[c]:
            X[r, col[i]] = 1
    pop = X.sum(axis=0)
    norm = np.sqrt(np.maximum(pop, 1))
    S = (X.T @ X) / norm[:, None] / norm[None, :]
    np.fill_diagonal(S, 0)
    tie = pop / (pop.max() + 1) * 1e-6
    out = {}
    row = {c: r for r, c in enumerate(custs)}
    for c in ids:
        owned = X[row[c]] if c in row else np.zeros(len(items), dtype=np.float32)
        score = owned @ S + tie
        score[owned > 0] = -np.inf
        best = np.argsort(-score, kind="stable")[:top]
        out[c] = [items[j] for j in best]
    return out


def eval_recommender(store, train_items, recent_items, truth, catalog_file, params, since, seeds, log, top=10, with_catalog=True):
    ids = sorted(truth)

    def popularity(holdings):
        """The most bought items (distinct buyers) the customer does not own."""
        pop = defaultdict(int)
        for items in holdings.values():
            for i in items:
                pop[i] += 1
        ranked = sorted(pop, key=lambda i: (-pop[i], i))
        return {c: [i for i in ranked if i not in train_items[c]][:top] for c in ids}
    # The baseline of the goal: all-time popularity. Beside it, for transparency, popularity over
    # the same window the private model counts (events_since), non-private.
    p_hr, p_ndcg = rank_metrics(popularity(train_items), truth, top)
    r_hr, r_ndcg = rank_metrics(popularity(recent_items), truth, top)
    job = {"job": "recommend-products", "purpose": "evaluation", "model": "recommender", "events": "purchase",
           "items_from": "products", "params": params}
    if since:
        job["events_since"] = since
    # The goal's baseline: item-based CF (cosine) from exact counts, numpy, on the same split.
    cf_hr, cf_ndcg = rank_metrics(itemcf_cosine(train_items, ids, top), truth, top)
    # For reference, ProfileVault's item-based model from exact counts (epsilon EXACT, with the
    # catalog): all-time popularity, no candidates or content, no noise to shrink, popularity
    # only to break ties.
    exact = {k: v for k, v in job.items() if k != "events_since"}
    exact["params"] = dict(NONPRIVATE_CF, similarity_threshold=0, popularity_weight=0.001, candidates=0, content_weight=0, popularity_share=0.5)
    art, _ = store.train(dict(exact, epsilon=EXACT))
    np_hr, np_ndcg = rank_metrics(store.recommend(art, ids, top), truth, top)
    if not with_catalog:
        del job["items_from"]
    # And the private model's own recipe without noise (epsilon EXACT), for reference.
    art, _ = store.train(dict(job, epsilon=EXACT))
    same_hr, same_ndcg = rank_metrics(store.recommend(art, ids, top), truth, top)
    out = {"data": "online-retail", "test_customers": len(ids), "params": params, "events_since": since, "catalog": with_catalog,
           "split": "train: purchases before 2011-07-01; test: the new items each training customer bought 2011-07-01..2011-09-30",
           "popularity": {"hr": p_hr, "ndcg": p_ndcg}, "recent_popularity": {"hr": r_hr, "ndcg": r_ndcg},
           "itemcf_cosine": {"hr": cf_hr, "ndcg": cf_ndcg},
           "nonprivate_itemcf": {"hr": np_hr, "ndcg": np_ndcg}, "nonprivate_same_model": {"hr": same_hr, "ndcg": same_ndcg},
           "by_epsilon": {}}
    log(f"recommender (catalog: {with_catalog}): popularity HR@10 {p_hr:.4f} NDCG@10 {p_ndcg:.4f}; popularity since {since} HR {r_hr:.4f} NDCG {r_ndcg:.4f}; "
        f"item CF cosine HR {cf_hr:.4f} NDCG {cf_ndcg:.4f}; ProfileVault item CF exact HR {np_hr:.4f} NDCG {np_ndcg:.4f}; same model non-private HR {same_hr:.4f} NDCG {same_ndcg:.4f}")
    for eps in EPSILONS:
        hr, nd, secs, vocab = [], [], [], []
        for s in seeds:
            art, sec = store.train(dict(job, epsilon=eps))
            t0 = time.perf_counter()
            h, n = rank_metrics(store.recommend(art, ids, top), truth, top)
            hr.append(h)
            nd.append(n)
            vocab.append(len(art.get("items") or []))
            secs.append((sec, time.perf_counter() - t0))
        out["by_epsilon"][str(eps)] = {"hr": summarize(hr), "ndcg": summarize(nd), "vocabulary": summarize(vocab),
                                       "train_seconds": summarize([a for a, _ in secs]), "recommend_seconds": summarize([b for _, b in secs])}
        log(f"recommender (catalog: {with_catalog}) eps={eps}: HR@10 {np.median(hr):.4f} NDCG@10 {np.median(nd):.4f}, vocabulary {np.median(vocab):.0f} "
            f"(train {np.median([a for a, _ in secs]):.1f} s, recommend {np.median([b for _, b in secs]):.1f} s)")
    return out


def eval_selection_sweep(store, truth, params, since, seeds, log, ks, shares, epsilons, top=10):
    """Chooses the item selection's defaults (no catalog): HR@10, NDCG@10 and the released
    vocabulary for each vote bound k (selection_items) and selection_share, at each epsilon of
    `epsilons`. The choice: the highest mean, over those epsilons, of the median NDCG@10 as a
    share of the best median NDCG@10 at that epsilon (each epsilon weighs the same)."""
    ids = sorted(truth)
    job = {"job": "recommend-products", "purpose": "evaluation", "model": "recommender", "events": "purchase", "params": params}
    if since:
        job["events_since"] = since
    out = {"data": "online-retail", "test_customers": len(ids), "params": params, "events_since": since, "epsilons": epsilons,
           "runs": len(seeds), "grid": []}
    for eps in epsilons:
        for k in ks:
            for share in shares:
                hr, nd, vocab = [], [], []
                for _ in seeds:
                    art, _ = store.train(dict(job, params=dict(params, selection_items=k, selection_share=share), epsilon=eps))
                    h, n = rank_metrics(store.recommend(art, ids, top), truth, top)
                    hr.append(h)
                    nd.append(n)
                    vocab.append(len(art.get("items") or []))
                out["grid"].append({"epsilon": eps, "selection_items": k, "selection_share": share,
                                    "hr": summarize(hr), "ndcg": summarize(nd), "vocabulary": summarize(vocab)})
                log(f"selection eps={eps} k={k} share={share}: HR@10 {np.median(hr):.4f} NDCG@10 {np.median(nd):.4f} vocabulary {np.median(vocab):.0f}")
    best_at = {e: max(g["ndcg"]["median"] for g in out["grid"] if g["epsilon"] == e) or 1.0 for e in epsilons}
    def merit(k, share):
        return float(np.mean([g["ndcg"]["median"] / best_at[g["epsilon"]] for g in out["grid"]
                              if g["selection_items"] == k and g["selection_share"] == share]))
    ranked = sorted(((merit(k, sh), k, sh) for k in ks for sh in shares), reverse=True)
    out["merit"] = [{"selection_items": k, "selection_share": sh, "merit": m} for m, k, sh in ranked]
    out["best"] = {"selection_items": ranked[0][1], "selection_share": ranked[0][2]}
    log(f"selection: best k={ranked[0][1]} share={ranked[0][2]} (merit {ranked[0][0]:.3f}); next {ranked[1:4]}")
    return out


def eval_segment_recommender(store, train_items, recent_items, truth, segment_of, catalog_file, params, since, seeds, log, top=10):
    """Segment-based recommendations (by country) against the item-based recommender, same
    job otherwise, same seeds; non-private: popularity within the customer's country."""
    ids = sorted(truth)
    pop = defaultdict(lambda: defaultdict(int))
    glob = defaultdict(int)
    for c, items in recent_items.items():
        for i in items:
            pop[segment_of[c]][i] += 1
            glob[i] += 1
    def seg_rank(c):
        p = pop[segment_of[c]]
        ranked = sorted(glob, key=lambda i: (-p.get(i, 0), -glob[i], i))
        return [i for i in ranked if i not in train_items[c]][:top]
    np_hr, np_ndcg = rank_metrics({c: seg_rank(c) for c in ids}, truth, top)
    job = {"job": "recommend-products", "purpose": "evaluation", "model": "recommender", "events": "purchase",
           "items_from": "products", "params": params}
    if since:
        job["events_since"] = since
    seg_job = dict(job, params=dict(params, by="country"))
    segs = defaultdict(int)
    for c in ids:
        segs[segment_of[c]] += 1
    out = {"data": "online-retail", "test_customers": len(ids), "segments": "country", "params": params, "events_since": since,
           "test_customers_by_segment": dict(sorted(segs.items(), key=lambda kv: -kv[1])[:5]),
           "nonprivate_segment_popularity": {"hr": np_hr, "ndcg": np_ndcg}, "by_epsilon": {}}
    log(f"segment recommender: non-private popularity within country HR@10 {np_hr:.4f} NDCG@10 {np_ndcg:.4f}")
    for eps in EPSILONS:
        row = {}
        for name, j in (("segment", seg_job), ("item_based", job)):
            hr, nd = [], []
            for _ in seeds:
                art, _ = store.train(dict(j, epsilon=eps))
                h, n = rank_metrics(store.recommend(art, ids, top), truth, top)
                hr.append(h)
                nd.append(n)
            row[name] = {"hr": summarize(hr), "ndcg": summarize(nd)}
        out["by_epsilon"][str(eps)] = row
        log(f"segment recommender eps={eps}: segment HR@10 {row['segment']['hr']['median']:.4f} NDCG {row['segment']['ndcg']['median']:.4f}; "
            f"item-based HR@10 {row['item_based']['hr']['median']:.4f} NDCG {row['item_based']['ndcg']['median']:.4f}")
    return out


def eval_mf_recommender(store, truth, catalog_file, params, since, seeds, log, factors, top=10):
    """Matrix factorisation (factors: k, popularity_share 0.8) against the item-based
    recommender with the same share (thresholded co-occurrence) and with its default (all of
    epsilon on popularity, content from the catalog), same runs."""
    ids = sorted(truth)
    job = {"job": "recommend-products", "purpose": "evaluation", "model": "recommender", "events": "purchase",
           "items_from": "products", "params": params}
    if since:
        job["events_since"] = since
    variants = [("matrix_factorization", dict(params, factors=factors, popularity_share=0.8)),
                ("item_based_cooccurrence", dict(params, popularity_share=0.8)),
                ("item_based_default", dict(params))]
    out = {"data": "online-retail", "test_customers": len(ids), "params": params, "factors": factors, "events_since": since,
           "variants": {n: p for n, p in variants}, "by_epsilon": {}}
    # Non-private: the same factorisation of exact counts (epsilon EXACT).
    art, _ = store.train(dict(job, params=variants[0][1], epsilon=EXACT))
    out["nonprivate_mf"] = dict(zip(["hr", "ndcg"], rank_metrics(store.recommend(art, ids, top), truth, top)))
    log(f"mf recommender: non-private factorisation HR@10 {out['nonprivate_mf']['hr']:.4f} NDCG@10 {out['nonprivate_mf']['ndcg']:.4f}")
    for eps in EPSILONS:
        row = {}
        for name, p in variants:
            hr, nd = [], []
            for _ in seeds:
                art, _ = store.train(dict(job, params=p, epsilon=eps))
                h, n = rank_metrics(store.recommend(art, ids, top), truth, top)
                hr.append(h)
                nd.append(n)
            row[name] = {"hr": summarize(hr), "ndcg": summarize(nd)}
        out["by_epsilon"][str(eps)] = row
        log(f"mf recommender eps={eps}: " + "; ".join(f"{n} HR@10 {v['hr']['median']:.4f} NDCG {v['ndcg']['median']:.4f}" for n, v in row.items()))
    return out


# ---------------------------------------------------------------------------------------------
# Association rules

def eval_rules(store, catalog_file, described, params, seeds, log, top=20, with_catalog=True):
    """Top rules (by lift) at each epsilon against the same recipe from exact counts (epsilon
    EXACT, with the catalog), per run:
      - recall: the share of the exact top `top` that the private top `top` contains (0 when
        the model releases no rule);
      - precision: the share of the private top `top` that the exact recipe also gives (any
        rank); undefined, and left out, for a run that releases no rule;
      - the rules released, the vocabulary, and the relative lift error of the rules both have.
    (Before 2026-12-07 the recall was called "precision", so a model that released nothing read
    as "all wrong".) Without a catalog the items come from the item selection."""
    job = {"job": "baskets", "purpose": "evaluation", "model": "association_rules", "events": "purchase",
           "items_from": "products", "params": params}
    key = lambda r: (tuple(sorted(r["antecedent"])), r["consequent"])
    exact_art, _ = store.train(dict(job, epsilon=EXACT))
    if not with_catalog:
        del job["items_from"]
    exact = exact_art["rules"]
    exact_top = {key(r) for r in exact[:top]}
    exact_by = {key(r): r for r in exact}
    name = lambda i: f"{i} {described.get(i, '')}".strip()
    out = {"data": "online-retail", "params": params, "top": top, "subjects": exact_art["params"].get("subjects"), "catalog": with_catalog,
           "exact_rules": len(exact), "exact_top": [dict(r, antecedent=[name(i) for i in r["antecedent"]], consequent=name(r["consequent"])) for r in exact[:10]],
           "by_epsilon": {}}
    log(f"rules: exact recipe gives {len(exact)} rules; top: " + "; ".join(f"{'+'.join(r['antecedent'])}->{r['consequent']} lift {r['lift']:.1f}" for r in exact[:5]))
    exact_all = set(exact_by)
    for eps in EPSILONS:
        rec, prec, err, count, vocab, example = [], [], [], [], [], None
        for s in seeds:
            art, _ = store.train(dict(job, epsilon=eps))
            rs = art["rules"]
            mine = {key(r) for r in rs[:top]}
            rec.append(len(mine & exact_top) / min(top, max(1, len(exact_top))))
            if mine:
                prec.append(len(mine & exact_all) / len(mine))
            vocab.append(len(art.get("items") or []))
            e = [abs(r["lift"] - exact_by[key(r)]["lift"]) / exact_by[key(r)]["lift"] for r in rs[:top] if key(r) in exact_by]
            if e:
                err.append(float(np.median(e)))
            count.append(len(rs))
            if example is None:
                example = [dict(r, antecedent=[name(i) for i in r["antecedent"]], consequent=name(r["consequent"]),
                                exact_lift=exact_by[key(r)]["lift"] if key(r) in exact_by else None,
                                exact_confidence=exact_by[key(r)]["confidence"] if key(r) in exact_by else None) for r in rs[:10]]
        out["by_epsilon"][str(eps)] = {"recall": summarize(rec), "precision": summarize(prec) if prec else None,
                                       "lift_error": summarize(err) if err else None, "rules": summarize(count),
                                       "vocabulary": summarize(vocab), "example_top": example}
        log(f"rules (catalog: {with_catalog}) eps={eps}: recall@{top} {np.median(rec):.2f}, precision {np.median(prec) if prec else float('nan'):.2f} "
            f"({len(prec)} runs with rules), median lift error {np.median(err) if err else float('nan'):.3f}, {np.median(count):.0f} rules, vocabulary {np.median(vocab):.0f}")
    return out


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profilectl", default=os.path.join(ROOT, ".build", "release", "profilectl"))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--factors", type=int, default=5, help="the matrix-factorisation recommender's factors (mf-rec)")
    ap.add_argument("--forest-params", default='{"trees": 30, "depth": 5}', help="the random_forest job's params (forest)")
    ap.add_argument("--quick", action="store_true", help="3 seeds")
    ap.add_argument("--epsilons", default="0.1,1,10", help="comma list (default 0.1,1,10)")
    ap.add_argument("--only", default="", help="comma list of: kmeans-bank, kmeans-mall, logistic, linear, recommender, recommender-nocatalog, selection-sweep, segment-rec, mf-rec, rules, rules-nocatalog, forest")
    ap.add_argument("--rules-params", default='{"min_support": 50}', help="association_rules job params (JSON)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "models", "results.json"))
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--rec-params", default='{"max_items_per_subject": 5}', help="recommender job params (JSON)")
    ap.add_argument("--rec-since", default="2011-05-01", help="the recommender job's events_since (two months before the cut; '' for none)")
    ap.add_argument("--sweep-k", default="1,2,3,5", help="selection-sweep: the vote bounds k (selection_items)")
    ap.add_argument("--sweep-share", default="0.3,0.5,0.7,0.9", help="selection-sweep: the selection shares")
    ap.add_argument("--sweep-epsilons", default="1,10", help="selection-sweep: the epsilons it chooses for")
    ap.add_argument("--kmeans-params", default="{}", help="extra k-means job params (JSON), for exploring")
    args = ap.parse_args()
    global EPSILONS
    EPSILONS = [float(e) for e in args.epsilons.split(",")]
    if not os.path.isdir(DATA):
        sys.exit(f"evaluate: {DATA} is absent: the evaluation needs ../shared/data")
    if not os.access(args.profilectl, os.X_OK):
        sys.exit(f"evaluate: no profilectl at {args.profilectl}: swift build -c release --product profilectl")
    seeds = list(range(3 if args.quick else args.seeds))
    only = set(filter(None, args.only.split(",")))
    want = lambda n: not only or n in only
    work = tempfile.mkdtemp(prefix="pv-models-")
    t_start = time.time()
    log = lambda m: print(f"[{time.time() - t_start:7.1f}s] {m}", file=sys.stderr, flush=True)
    results = {}
    if os.path.exists(args.out):
        with open(args.out) as f:
            results = json.load(f)
    results["meta"] = {"seeds": len(seeds), "epsilons": EPSILONS, "split_seed": SPLIT_SEED,
                       "date": time.strftime("%Y-%m-%d"), "profilectl": os.path.relpath(args.profilectl, ROOT)}
    # Each block this run writes records when and how it was measured (the report prints it
    # beside its figures), so blocks from different runs never pass for one measurement.
    stamp = {"date": time.strftime("%Y-%m-%d"), "runs": len(seeds), "epsilons": EPSILONS,
             "profilectl": os.path.relpath(args.profilectl, ROOT),
             "command": " ".join(["bench/models/evaluate.py"] + [a if " " not in a else f"'{a}'" for a in sys.argv[1:]])}
    before = {k: id(v) for k, v in results.items()}
    try:
        # --- bank marketing: k-means and logistic regression -----------------------------------
        if want("kmeans-bank") or want("logistic") or want("forest"):
            header, rows, ids = load_bank()
            schema = os.path.join(EXAMPLES, "bank-marketing.schema.yaml")
            bounds = schema_bounds(schema)
            perm = np.random.default_rng(SPLIT_SEED).permutation(len(rows))
            n_train = int(0.8 * len(rows))
            train_idx, test_idx = perm[:n_train], perm[n_train:]
            store = Store(args.profilectl, work, "bank", schema,
                          ["user.demographic", "user.job_title", "user.financial", "user.behavior"],
                          ["kmeans", "logistic_regression", "linear_regression", "segments", "random_forest"])
            store.ingest("profiles", [[ids[i]] + rows[i] for i in train_idx], ["customer_id"] + header)
            log(f"bank: {n_train} training subjects ingested, {len(test_idx)} held out")
            col = {h: j for j, h in enumerate(header)}
            num = lambda idx, f: np.array([[1.0 if rows[i][col[c]] == "yes" else 0.0 if rows[i][col[c]] == "no"
                                            else float(rows[i][col[c]]) for c in f] for i in idx])
            if want("kmeans-bank"):
                f = ["age", "balance", "day", "duration", "campaign", "pdays", "previous"]
                b = [bounds[x] for x in f]
                results["kmeans_bank"] = eval_kmeans("bank-marketing", store, unit_scale(num(train_idx, f), b), f, b, 4, seeds, log, json.loads(args.kmeans_params))
            if want("logistic"):
                f = ["age", "balance", "duration", "campaign", "pdays", "previous", "housing", "loan"]
                b = [bounds[x] for x in f]
                results["logistic_bank"] = eval_logistic(store, num(train_idx, f), num(train_idx, ["y"]).ravel(),
                                                         num(test_idx, f), num(test_idx, ["y"]).ravel(), f, b, seeds, log)
            if want("forest"):
                f = ["age", "balance", "duration", "campaign", "pdays", "previous", "housing", "loan"]
                b = [bounds[x] for x in f]
                results["forest_bank"] = eval_forest(store, num(train_idx, f), num(train_idx, ["y"]).ravel(),
                                                     num(test_idx, f), num(test_idx, ["y"]).ravel(), f, b, seeds, log, json.loads(args.forest_params))

        # --- Mall customers: k-means ------------------------------------------------------------
        if want("kmeans-mall"):
            rows = load_mall()
            schema = os.path.join(EXAMPLES, "mall-customers.schema.yaml")
            bounds = schema_bounds(schema)
            store = Store(args.profilectl, work, "mall", schema,
                          ["user.demographic", "user.financial", "user.behavior"], ["kmeans", "segments"])
            store.ingest("profiles", [[f"M-{r[0]}", r[1], r[2], r[3], r[4]] for r in rows],
                         ["customer_id", "genre", "age", "annual_income", "spending_score"])
            f = ["annual_income", "spending_score"]
            b = [bounds[x] for x in f]
            X = np.array([[float(r[3]), float(r[4])] for r in rows])
            results["kmeans_mall"] = eval_kmeans("mall-customers", store, unit_scale(X, b), f, b, 5, seeds, log)

        # --- online retail: recommender (and linear regression on event aggregates) ------------
        if want("recommender") or want("linear") or want("rules") or want("rules-nocatalog") or want("segment-rec") or want("mf-rec") or want("recommender-nocatalog") or want("selection-sweep"):
            rows = load_retail()
            schema = os.path.join(EXAMPLES, "online-retail.schema.yaml")
            cut, end = "2011-07-01", "2011-10-01"
            country = {}
            for r in rows:
                country.setdefault(r[6], r[7])
            catalog = os.path.join(work, "catalog.tsv")
            described = {}
            for r in rows:
                described.setdefault(r[1], " ".join(r[2].split()))
            with open(catalog, "w") as fcat:       # the shop's public product list: stock code, tab, description
                fcat.write("".join(f"{i}\t{described[i]}\n" for i in sorted(described)))
            if want("recommender") or want("segment-rec") or want("mf-rec") or want("recommender-nocatalog") or want("selection-sweep"):
                train_rows = [r for r in rows if r[4] < cut]
                store = Store(args.profilectl, work, "retail-train", schema,
                              ["user.location.imprecise", "user.behavior"], ["recommender"], catalog=catalog)
                custs = sorted({r[6] for r in train_rows})
                store.ingest("profiles", [[f"R-{c}", country[c]] for c in custs], ["customer_id", "country"])
                store.ingest("events", [[f"R-{r[6]}", "purchase", r[1], f"{float(r[3]) * float(r[5]):.2f}", r[4]]
                                        for r in train_rows], ["customer_id", "kind", "item", "value", "time"])
                owned, recent = defaultdict(set), defaultdict(set)
                for r in train_rows:
                    if int(r[3]) > 0:
                        owned[f"R-{r[6]}"].add(r[1])
                        if args.rec_since and r[4] >= args.rec_since:
                            recent[f"R-{r[6]}"].add(r[1])
                truth = defaultdict(set)
                for r in rows:
                    cid = f"R-{r[6]}"
                    if r[4] >= cut and int(r[3]) > 0 and cid in owned and r[1] not in owned[cid]:
                        truth[cid].add(r[1])
                log(f"retail: {len(custs)} customers and {len(train_rows)} purchases before {cut}; {len(truth)} test customers")
                if want("recommender"):
                    results["recommender_retail"] = eval_recommender(
                        store, owned, recent if args.rec_since else owned, dict(truth), catalog, json.loads(args.rec_params), args.rec_since or None, seeds, log)
                if want("recommender") or want("recommender-nocatalog"):
                    results["recommender_retail_nocatalog"] = eval_recommender(
                        store, owned, recent if args.rec_since else owned, dict(truth), catalog, json.loads(args.rec_params), args.rec_since or None, seeds, log,
                        with_catalog=False)
                if want("selection-sweep"):
                    results["selection_sweep_retail"] = eval_selection_sweep(
                        store, dict(truth), json.loads(args.rec_params), args.rec_since or None, seeds, log,
                        [int(k) for k in args.sweep_k.split(",")], [float(x) for x in args.sweep_share.split(",")],
                        [float(x) for x in args.sweep_epsilons.split(",")])
                if want("mf-rec"):
                    results["mf_recommender_retail"] = eval_mf_recommender(
                        store, dict(truth), catalog, json.loads(args.rec_params), args.rec_since or None, seeds, log, args.factors)
                if want("segment-rec"):
                    results["segment_recommender_retail"] = eval_segment_recommender(
                        store, owned, recent if args.rec_since else owned, dict(truth), {f"R-{c}": country[c] for c in country}, catalog,
                        json.loads(args.rec_params), args.rec_since or None, seeds, log)
            if want("rules") or want("rules-nocatalog"):
                store = Store(args.profilectl, work, "retail-rules", schema,
                              ["user.location.imprecise", "user.behavior"], ["association_rules"], catalog=catalog)
                store.ingest("profiles", [[f"R-{c}", country[c]] for c in sorted(country)], ["customer_id", "country"])
                store.ingest("events", [[f"R-{r[6]}", "purchase", r[1], f"{float(r[3]) * float(r[5]):.2f}", r[4]]
                                        for r in rows if int(r[3]) > 0], ["customer_id", "kind", "item", "value", "time"])
                if want("rules"):
                    results["rules_retail"] = eval_rules(store, catalog, described, json.loads(args.rules_params), seeds, log)
                if want("rules-nocatalog"):
                    results["rules_retail_nocatalog"] = eval_rules(store, catalog, described, json.loads(args.rules_params), seeds, log,
                                                                   with_catalog=False)
            if want("linear"):
                store = Store(args.profilectl, work, "retail-full", schema,
                              ["user.location.imprecise", "user.behavior"], ["linear_regression"])
                custs = sorted(country)
                store.ingest("profiles", [[f"R-{c}", country[c]] for c in custs], ["customer_id", "country"])
                store.ingest("events", [[f"R-{r[6]}", "purchase", r[1], f"{float(r[3]) * float(r[5]):.2f}", r[4]]
                                        for r in rows], ["customer_id", "kind", "item", "value", "time"])
                agg = defaultdict(lambda: [0.0, 0.0, 0.0])
                for r in rows:
                    v = max(-1000.0, min(1000.0, float(r[3]) * float(r[5])))     # the schema clamps event values
                    a = agg[r[6]]
                    if r[4] < cut:
                        a[0] += 1
                        a[1] += v
                    else:
                        a[2] += v
                # Later spend from earlier spend (the main figure), and from earlier spend and the
                # number of purchase lines: frequency adds little R² and costs budget.
                derived = {"lines_before": {"events": "purchase", "aggregate": "count", "before": cut, "bounds": [0, 1000]},
                           "spend_before": {"events": "purchase", "aggregate": "sum", "before": cut, "bounds": [0, 20000]},
                           "spend_later": {"events": "purchase", "aggregate": "sum", "from": cut, "before": end, "bounds": [0, 10000]}}
                y = np.array([agg[c][2] for c in custs])
                for key, features, cols in [("linear_retail", ["spend_before"], [1]), ("linear_retail_2f", ["lines_before", "spend_before"], [0, 1])]:
                    job = {"job": "later-spend", "purpose": "evaluation", "model": "linear_regression",
                           "derived": {n: derived[n] for n in features + ["spend_later"]}, "features": features, "target": "spend_later"}
                    X = np.array([[agg[c][j] for j in cols] for c in custs])
                    xb = [tuple(float(v) for v in derived[n]["bounds"]) for n in features]
                    # the private model sees every customer of the store; R² is measured on all of them
                    results[key] = eval_linear(store, job, X, y, X, y, xb, (0.0, 10000.0), seeds, log, "online-retail")
    finally:
        if args.keep:
            log(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    for k, v in results.items():
        if k != "meta" and isinstance(v, dict) and before.get(k) != id(v):
            v["measured"] = stamp
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    log(f"wrote {os.path.relpath(args.out, ROOT)}")
    if os.path.abspath(args.out) == os.path.join(ROOT, "bench", "models", "results.json"):
        subprocess.run([sys.executable, os.path.join(ROOT, "bench", "models", "report.py")], check=True)


if __name__ == "__main__":
    main()
