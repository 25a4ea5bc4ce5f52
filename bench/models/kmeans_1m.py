#!/usr/bin/env python3
"""k-means on 1,000,000 subjects x 8 attributes, k = 8, epsilon 1: ProfileVault end to end from
the store (`profilectl train`, wall time of the process) against IBM diffprivlib 0.6.6 on the
same data in memory (fit time), both as inertia ratios to scikit-learn's KMeans (n_init=10).

The data: a seeded mixture of 8 Gaussian clusters in 8 integer attributes with public bounds
[0, 1000] (a few percent of values fall outside and are clamped by ingest). Writes
"kmeans_1m" into bench/models/results.json (bench/report.py shows it in docs/benchmarks.md).

    bench/models/.venv/bin/python bench/models/kmeans_1m.py [--subjects 1000000] [--runs 3]
"""
import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from evaluate import ROOT, Store, inertia  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "bench"))
from kmeans_section import kmeans_lines  # noqa: E402

FEATURES = [f"x{i}" for i in range(1, 9)]



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--profilectl", default=os.path.join(ROOT, ".build", "release", "profilectl"))
    ap.add_argument("--subjects", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "models", "results.json"))
    args = ap.parse_args()
    from sklearn.cluster import KMeans
    from diffprivlib.models import KMeans as DPKMeans

    t0 = time.time()
    log = lambda m: print(f"[{time.time() - t0:7.1f}s] {m}", file=sys.stderr, flush=True)
    rng = np.random.default_rng(8)
    k, d, n = 8, 8, args.subjects
    centres = rng.uniform(150, 850, (k, d))
    labels = rng.integers(0, k, n)
    X = np.clip(np.rint(centres[labels] + rng.normal(0, 60, (n, d))), 0, 1000)
    work = tempfile.mkdtemp(prefix="pv-kmeans1m-")
    try:
        schema = os.path.join(work, "schema.yaml")
        with open(schema, "w") as f:
            f.write("version: 1\nsubject_id: { field: customer_id, category: user.unique_id }\nfields:\n")
            for name in FEATURES:
                f.write(f"  {name}: {{ type: int, category: user.behavior, bounds: [0, 1000] }}\n")
        store = Store(args.profilectl, work, "store", schema, ["user.behavior"], ["kmeans"])
        path = os.path.join(store.dir, "profiles.csv")
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["customer_id"] + FEATURES)
            for i in range(n):
                w.writerow([f"K-{i:07d}"] + [int(v) for v in X[i]])
        t = time.perf_counter()
        store.run("ingest", "profiles", path, role="operator")
        log(f"ingested {n:,} subjects in {time.perf_counter() - t:.1f} s")
        U = X / 1000.0
        t = time.perf_counter()
        base = KMeans(n_clusters=k, n_init=10, random_state=0).fit(U).inertia_
        sk_seconds = time.perf_counter() - t
        log(f"scikit-learn KMeans n_init=10: {sk_seconds:.1f} s")
        ours, ours_s, dpl, dpl_s = [], [], [], []
        for run in range(args.runs):
            art, sec = store.train({"job": "kmeans-1m", "purpose": "evaluation", "model": "kmeans",
                                    "features": FEATURES, "params": {"k": k}, "epsilon": 1.0})
            ours.append(inertia(U, np.array(art["centroids"]) / 1000.0) / base)
            ours_s.append(sec)
            t = time.perf_counter()
            m = DPKMeans(n_clusters=k, epsilon=1.0, bounds=(np.zeros(d), np.ones(d)), random_state=run).fit(U)
            dpl_s.append(time.perf_counter() - t)
            dpl.append(inertia(U, m.cluster_centers_) / base)
            log(f"run {run}: ProfileVault {sec:.2f} s ratio {ours[-1]:.3f}; diffprivlib {dpl_s[-1]:.2f} s ratio {dpl[-1]:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = lambda v: float(np.median(v))
    res = {"subjects": n, "features": d, "k": k, "epsilon": 1.0, "runs": args.runs,
           "profilevault_seconds": med(ours_s), "profilevault_ratio": med(ours),
           "diffprivlib_seconds": med(dpl_s), "diffprivlib_ratio": med(dpl), "sklearn_seconds": sk_seconds,
           "date": time.strftime("%Y-%m-%d")}
    results = {}
    if os.path.exists(args.out):
        with open(args.out) as f:
            results = json.load(f)
    results["kmeans_1m"] = res
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    log(json.dumps(res))
    # The same section bench/report.py writes: update the committed figures in place.
    bench_json = os.path.join(ROOT, "bench", "results.json")
    if os.path.exists(bench_json):
        with open(bench_json) as f:
            b = json.load(f)
        b["kmeans"] = res
        with open(bench_json, "w") as f:
            json.dump(b, f, indent=2)
    doc = os.path.join(ROOT, "docs", "benchmarks.md")
    if os.path.exists(doc):
        with open(doc) as f:
            text = f.read()
        start = text.find("## Not measured yet")
        if start < 0:
            start = text.find("## k-means against diffprivlib")
        if start >= 0:
            text = text[:start] + "\n".join(kmeans_lines(res)) + "\n"
            with open(doc, "w") as f:
                f.write(text)


if __name__ == "__main__":
    main()
