#!/usr/bin/env python3
"""Accuracy at equal privacy: ProfileVault's DP query layer against OpenDP (issue 23).

The bank-marketing training file (../shared/data/bank-marketing/bank-train.csv, 36,169 rows) is
ingested into a fresh store through `profilectl`; every release below is a real `profilectl
query` (gate, budget, audit, consent filter). The same releases are made with OpenDP 0.16.0 on
the same values, at the same epsilon, under the same neighbouring relation (one subject added or
removed: OpenDP's symmetric distance with d_in = 1, pure epsilon-DP):

  sum     clamped sum: OpenDP `then_clamp >> then_sum >> then_laplace` (discrete Laplace on
          integers, the scale found by `binary_search_param`), against `query sum --bounds`;
  mean    OpenDP has no mean for an unknown number of rows, so the usual composition: a clamped
          sum at epsilon/2 and a count at epsilon/2, divided; against `query mean --bounds`;
  median  OpenDP `then_private_quantile` (exponential mechanism) over at most 1,024 integer
          candidates spread over the bounds (our grid has 1,024 cells), against
          `query quantile --q 0.5 --bounds`.

For each, over R independent releases (profilectl draws its noise from OpenSSL's CSPRNG; OpenDP
from its own CSPRNG): the stated 95% half-width where the library states one, and the empirical
95th percentile of |release - exact| (the half-width a user actually experiences). Writes
bench/dp/results.json and prints a Markdown table.

    python3 -m venv bench/dp/.venv
    bench/dp/.venv/bin/pip install -r bench/dp/requirements.txt
    swift build -c release --product profilectl
    bench/dp/.venv/bin/python bench/dp/opendp_compare.py [--runs 200] [--epsilon 1]
"""
import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import opendp.prelude as dp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "bank-marketing", "bank-train.csv")
SCHEMA = os.path.join(ROOT, "policies", "examples", "bank-marketing.schema.yaml")

dp.enable_features("contrib")

# (label, attribute, lower, upper): public bounds per query, inside the schema's.
QUERIES = [
    ("age", "age", 18, 100),
    ("balance", "balance", -2000, 20000),
]


class Store:
    def __init__(self, profilectl, work):
        self.pv = profilectl
        self.dir = work
        os.makedirs(os.path.join(work, "policies"))
        shutil.copy(SCHEMA, os.path.join(work, "policies", "schema.yaml"))
        with open(os.path.join(work, "policies", "policy.yaml"), "w") as f:
            f.write("""version: "opendp-comparison"
purposes:
  evaluation:
    data_use: analytics.reporting
    legal_basis: legitimate_interest
    may_read: [user.demographic, user.financial, user.behavior, user.job_title]
    dp_budget: { epsilon: 1000000, period: 30d }
roles:
  operator: [ingest]
  trainer: [query]
""")
        self.env = dict(os.environ, PROFILEVAULT_STORE=os.path.join(work, "store.sqlite"),
                        PROFILEVAULT_KEYS=os.path.join(work, "keys.json"),
                        PROFILEVAULT_POLICY=os.path.join(work, "policies"))
        self.run("keys", "generate", "--out", self.env["PROFILEVAULT_KEYS"])
        self.run("init")

    def run(self, *args, role=None):
        cmd = [self.pv, *args] + (["--role", role] if role else [])
        p = subprocess.run(cmd, env=self.env, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"opendp_compare: {' '.join(cmd[1:])} failed ({p.returncode}): {p.stderr.strip()}")
        return p.stdout

    def query(self, kind, attribute, lo, hi, epsilon, extra=()):
        # --fresh: every run is a new release, paid for; without it the release cache answers
        # runs 2..N with run 1's release and the "empirical" error measures nothing.
        out = self.run("query", kind, "--purpose", "evaluation", "--attribute", attribute, "--epsilon", repr(epsilon),
                       f"--bounds={lo},{hi}", "--json", "--fresh", *extra, role="trainer")
        r = json.loads(out)
        if r.get("cached"):
            sys.exit("a release came from the release cache: the runs would not be independent")
        return r


def opendp_scale(build, epsilon):
    return dp.binary_search_param(build, d_in=1, d_out=epsilon)


def p95(errors):
    return float(np.percentile(np.abs(np.array(errors, dtype=float)), 95))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--profilectl", default=os.path.join(ROOT, ".build", "release", "profilectl"))
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--epsilon", type=float, default=1.0)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "dp", "results.json"))
    args = ap.parse_args()
    if not os.path.exists(DATA):
        sys.exit(f"opendp_compare: {DATA} is absent: the comparison needs ../shared/data")
    if not os.access(args.profilectl, os.X_OK):
        sys.exit(f"opendp_compare: no profilectl at {args.profilectl}: swift build -c release --product profilectl")
    eps, runs = args.epsilon, args.runs
    with open(DATA) as f:
        rows = list(csv.reader(f, delimiter=";"))
    header, rows = rows[0], rows[1:]
    col = {h: j for j, h in enumerate(header)}
    work = tempfile.mkdtemp(prefix="pv-opendp-")
    t0 = time.time()
    log = lambda m: print(f"[{time.time() - t0:6.1f}s] {m}", file=sys.stderr, flush=True)
    results = {"meta": {"epsilon": eps, "runs": runs, "rows": len(rows), "opendp": "0.16.0",
                        "date": time.strftime("%Y-%m-%d"), "profilectl": os.path.relpath(args.profilectl, ROOT)},
               "queries": {}}
    try:
        store = Store(args.profilectl, work)
        path = os.path.join(work, "profiles.csv")
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["customer_id"] + header)
            for i, r in enumerate(rows):
                w.writerow([f"B-{i:06d}"] + r)
        store.run("ingest", "profiles", path, role="operator")
        log(f"{len(rows)} subjects ingested")
        space = (dp.vector_domain(dp.atom_domain(T=int)), dp.symmetric_distance())
        for label, attr, lo, hi in QUERIES:
            values = np.array([int(r[col[attr]]) for r in rows])
            clamped = np.clip(values, lo, hi)
            exact_sum, n = int(clamped.sum()), len(clamped)
            exact_mean = exact_sum / n
            # The exact median as our grid and OpenDP's candidates see it (both report a grid point).
            # At most 1,024 integer candidates (fewer when the range is narrower), as our grid.
            candidates = sorted({int(round(lo + (hi - lo) * k / 1023)) for k in range(1024)})
            exact_median = float(np.median(clamped))
            r = {}

            # --- sum
            ours = [store.query("sum", attr, lo, hi, eps) for _ in range(runs)]
            ours_half = float(np.median([(o["interval"][1] - o["interval"][0]) / 2 for o in ours]))
            build_sum = lambda s: space >> dp.t.then_clamp((lo, hi)) >> dp.t.then_sum() >> dp.m.then_laplace(s)
            s_sum = opendp_scale(build_sum, eps)
            m_sum = build_sum(s_sum)
            theirs = [m_sum(values.tolist()) for _ in range(runs)]
            r["sum"] = {"exact": exact_sum,
                        "ours": {"scale": ours[0]["scale"], "stated_half_width_95": ours_half,
                                 "empirical_p95_abs_error": p95([o["value"] - exact_sum for o in ours])},
                        "opendp": {"scale": s_sum, "stated_half_width_95": float(dp.discrete_laplacian_scale_to_accuracy(s_sum, 0.05)),
                                   "empirical_p95_abs_error": p95([t - exact_sum for t in theirs])}}
            log(f"{label}: sum done")

            # --- mean: sum and count at epsilon/2 each on OpenDP's side
            ours = [store.query("mean", attr, lo, hi, eps) for _ in range(runs)]
            ours_half = float(np.median([(o["interval"][1] - o["interval"][0]) / 2 for o in ours]))
            s_half = opendp_scale(build_sum, eps / 2)
            m_half_sum = build_sum(s_half)
            build_count = lambda s: space >> dp.t.then_count() >> dp.m.then_laplace(s)
            s_count = opendp_scale(build_count, eps / 2)
            m_count = build_count(s_count)
            theirs = []
            for _ in range(runs):
                c = max(1, m_count(values.tolist()))
                theirs.append(min(hi, max(lo, m_half_sum(values.tolist()) / c)))
            r["mean"] = {"exact": exact_mean,
                         "ours": {"stated_half_width_95": ours_half,
                                  "empirical_p95_abs_error": p95([o["value"] - exact_mean for o in ours])},
                         "opendp": {"sum_scale": s_half, "count_scale": s_count, "stated_half_width_95": None,
                                    "empirical_p95_abs_error": p95([t - exact_mean for t in theirs])}}
            log(f"{label}: mean done")

            # --- median over the same 1,024 grid points
            ours = [store.query("quantile", attr, lo, hi, eps, ["--q", "0.5"]) for _ in range(runs)]
            build_q = lambda s: space >> dp.t.then_clamp((lo, hi)) >> dp.m.then_private_quantile(dp.max_divergence(), candidates, 0.5, s)
            s_q = opendp_scale(build_q, eps)
            m_q = build_q(s_q)
            theirs = [m_q(values.tolist()) for _ in range(runs)]
            ranks = np.sort(clamped)
            rank_err = lambda v: abs(np.searchsorted(ranks, v, side="left") / n - 0.5)
            r["median"] = {"exact": exact_median,
                           "ours": {"empirical_p95_abs_error": p95([o["quantiles"][0]["value"] - exact_median for o in ours]),
                                    "empirical_p95_rank_error": float(np.percentile([rank_err(o["quantiles"][0]["value"]) for o in ours], 95))},
                           "opendp": {"scale": s_q, "empirical_p95_abs_error": p95([t - exact_median for t in theirs]),
                                      "empirical_p95_rank_error": float(np.percentile([rank_err(t) for t in theirs], 95))}}
            log(f"{label}: median done")
            results["queries"][label] = {"bounds": [lo, hi], **r}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"| query | ours: stated 95% half-width | ours: empirical p95 error | OpenDP: stated 95% half-width | OpenDP: empirical p95 error | ratio (ours / OpenDP, empirical) |")
    print("|---|---|---|---|---|---|")
    for label, q in results["queries"].items():
        for kind in ("sum", "mean", "median"):
            o, t = q[kind]["ours"], q[kind]["opendp"]
            fmt = lambda v: "-" if v is None else f"{v:,.4g}"
            ratio = o["empirical_p95_abs_error"] / t["empirical_p95_abs_error"] if t["empirical_p95_abs_error"] else float("nan")
            rank = lambda x: f" (rank {x['empirical_p95_rank_error']:.4f})" if "empirical_p95_rank_error" in x else ""
            print(f"| {kind} {label} [{q['bounds'][0]}, {q['bounds'][1]}] | {fmt(o.get('stated_half_width_95'))} | {fmt(o['empirical_p95_abs_error'])}{rank(o)} | "
                  f"{fmt(t.get('stated_half_width_95'))} | {fmt(t['empirical_p95_abs_error'])}{rank(t)} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
