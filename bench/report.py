#!/usr/bin/env python3
"""Turns bench/run.sh's raw runs into bench/results.json and docs/benchmarks.md (with PNG plots
in docs/img/bench-*.png when matplotlib is installed).

    report.py RUNS.jsonl PROFILES RUNS QUICK     (what bench/run.sh calls)
    report.py --from-results                      (re-render the page and plots from bench/results.json)
"""
import json, os, platform, statistics, subprocess, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kmeans_section import kmeans_lines

med = statistics.median

def cpu():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"): return line.split(":", 1)[1].strip()
    except OSError: pass
    return platform.processor()

def measure(runs_path, profiles, runs, quick):
  rows = [json.loads(l) for l in open(runs_path) if l.strip()]
  def by(mode): return [r for r in rows if r.get("mode") == mode]
  plain, vault, peer = by("plain"), by("vault"), by("python")
  suite, audit, noise = by("suite")[0], by("audit")[0], by("noise")[0]
  seal, ossl = by("seal"), by("openssl")
  return {
    "machine": {"cpu": cpu(), "cores": os.cpu_count(), "os": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "swift": subprocess.run(["swift", "--version"], capture_output=True, text=True).stdout.splitlines()[0] if True else ""},
    "ingest": {"profiles": profiles, "runs": runs,
               "encrypted_rows_per_s": med([r["rate"] for r in vault]), "plain_rows_per_s": med([r["rate"] for r in plain]),
               "python_peer_rows_per_s": med([r["rate"] for r in peer]), "peak_rss_mb": max(r["peak_rss_mib"] for r in vault)},
    "get": {"subjects": suite["subjects"], "p50_ms": suite["get"]["p50_ms"], "p99_ms": suite["get"]["p99_ms"]},
    "query": {"subjects": suite["subjects"], **{k: v for k, v in suite["query"].items()},
              "dp_ms": suite["query"]["count_where"]["dp_ms"], "raw_sql_ms": suite["query"]["count_where"]["raw_sql_ms"]},
    "erase": {"subjects_per_s": suite["erase"]["subjects_per_s"], "erased": suite["erase"]["erased"]},
    "rotate": {"deks_per_s": suite["rotate"]["deks_per_s"], "rewrapped": suite["rotate"]["rewrapped"], "seconds": suite["rotate"]["seconds"]},
    "audit": {"append_per_s": audit["append_per_s"], "verify_per_s": audit["verify_file_per_s"], "verify_store_per_s": audit["verify_store_per_s"], "entries": audit["entries"]},
    "noise": {"samples_per_s": noise["samples_per_s"]},
    "seal64": {"ops_per_s": med([r["ops_per_second"] for r in seal]), "openssl_speed_ops_per_s": med([r["ops_per_second"] for r in ossl])},
    # k-means 1M x 8 against diffprivlib: measured by bench/models/kmeans_1m.py (its own venv).
    "kmeans": (json.load(open("bench/models/results.json")).get("kmeans_1m") if os.path.exists("bench/models/results.json") else None),
  }
if sys.argv[1:] == ["--from-results"]:
  res = json.load(open("bench/results.json"))
  res["kmeans"] = (json.load(open("bench/models/results.json")).get("kmeans_1m") if os.path.exists("bench/models/results.json") else res.get("kmeans"))
  profiles, runs, quick = res["ingest"]["profiles"], res["ingest"].get("runs", 1), res.get("quick", False)
else:
  profiles, runs, quick = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
  res = measure(sys.argv[1], profiles, runs, quick)
  res["quick"] = quick
i = res["ingest"]
q = res["query"]
goals = [
  ("encrypted ingest >= 0.5 x plain SQLite", i["encrypted_rows_per_s"] / i["plain_rows_per_s"], 0.5, ">="),
  ("encrypted ingest >= 3 x Python peer", i["encrypted_rows_per_s"] / i["python_peer_rows_per_s"], 3.0, ">="),
  ("peak RSS < 300 MB", i["peak_rss_mb"], 300, "<"),
  ("get p99 < 5 ms", res["get"]["p99_ms"], 5, "<"),
  *[(f"DP {k} <= 1.5 x raw SQL", q[k]["ratio"], 1.5, "<=") for k in ("count_where", "sum", "grouped_mean")],
  ("audit append >= 50,000 entries/s", res["audit"]["append_per_s"], 50000, ">="),
  ("bulk erasure >= 500 subjects/s", res["erase"]["subjects_per_s"], 500, ">="),
  ("re-wrap 1,000,000 DEKs < 60 s (projected)", 1_000_000 / res["rotate"]["deks_per_s"], 60, "<"),
  ("noise >= 1,000,000 samples/s", res["noise"]["samples_per_s"], 1_000_000, ">="),
  ("AES-256-GCM seal 64 B >= 0.55 x openssl speed", res["seal64"]["ops_per_s"] / res["seal64"]["openssl_speed_ops_per_s"], 0.55, ">="),
]
def met(v, g, op): return {">=": v >= g, "<": v < g, "<=": v <= g}[op]
res["goals"] = [{"goal": n, "value": v, "met": met(v, g, op)} for n, v, g, op in goals]
os.makedirs("bench", exist_ok=True)
json.dump(res, open("bench/results.json", "w"), indent=2)

def f(x, d=0): return f"{x:,.{d}f}"

def plot_lines(res):
  """Throughput and latency bars against the baselines of the same run (docs/img/bench-*.png)."""
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    print("report: matplotlib is not installed: no plots (pip install -r bench/peers/requirements.txt)", file=sys.stderr)
    return []
  os.makedirs("docs/img", exist_ok=True)
  i, q = res["ingest"], res["query"]
  def bars(path, title, unit, labels, values, colors):
    fig, ax = plt.subplots(figsize=(5.5, 2.6), dpi=110)
    y = range(len(labels))
    ax.barh(list(y), values, color=colors)
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.invert_yaxis()
    for k, v in enumerate(values):
      ax.text(v, k, f" {v:,.0f}" if v >= 100 else f" {v:,.1f}", va="center", fontsize=8)
    ax.set_xlim(0, max(values) * 1.25)
    ax.set_xlabel(unit, fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
  pv, base, peer = "#1f77b4", "#999999", "#ff7f0e"
  bars("docs/img/bench-ingest.png", f"ingest, {i['profiles']:,} profiles", "profiles/s",
       ["ProfileVault (encrypted)", "plain SQLite (no crypto)", "Python peer (sqlite3 + cryptography)"],
       [i["encrypted_rows_per_s"], i["plain_rows_per_s"], i["python_peer_rows_per_s"]], [pv, base, peer])
  names = [("count_where", "count --where"), ("sum", "sum"), ("grouped_mean", "mean --group-by")]
  labels, values, colors = [], [], []
  for k, n in names:
    labels += [f"DP {n}", f"raw SQL {n}"]
    values += [q[k]["dp_ms"], q[k]["raw_sql_ms"]]
    colors += [pv, base]
  bars("docs/img/bench-query.png", f"DP queries over {q.get('subjects', res['get'].get('subjects', 0)):,} subjects (lower is better)", "ms",
       labels, values, colors)
  return ["![ingest throughput against plain SQLite and the Python peer](img/bench-ingest.png)", "",
          "![DP query latency against the same aggregate in raw SQL](img/bench-query.png)", "",
          "Utility against epsilon for every model, beside its non-private version and diffprivlib: "
          "[models.md](models.md#evaluation-on-real-data) (for example "
          "[k-means](img/models-kmeans_bank.png), [recommender](img/models-recommender_retail.png)).", ""]
md = [
  "# Benchmarks", "",
  f"Measured by `bench/run.sh{' --quick' if quick else ''}` on {res['machine']['date']}: {res['machine']['cpu']}, "
  f"{res['machine']['cores']} cores; release build. {profiles:,} generated profiles; medians of {runs} run(s) where repeated. "
  "Every figure stands beside its baseline from the same run (these machines are noisy; compare ratios). "
  "Raw numbers: `bench/results.json`.", "",
  "| figure | ProfileVault | baseline | ratio / goal | met |", "|---|---|---|---|---|",
  f"| ingest, profiles/s | {f(i['encrypted_rows_per_s'])} | plain SQLite {f(i['plain_rows_per_s'])}; Python peer {f(i['python_peer_rows_per_s'])} | {i['encrypted_rows_per_s']/i['plain_rows_per_s']:.2f} of plain (>= 0.5); {i['encrypted_rows_per_s']/i['python_peer_rows_per_s']:.2f} x peer (>= 3) | {'yes' if goals[0][1] >= 0.5 else 'no'} / {'yes' if goals[1][1] >= 3 else 'no'} |",
  f"| ingest peak RSS | {f(i['peak_rss_mb'])} MB | | < 300 MB | {'yes' if i['peak_rss_mb'] < 300 else 'no'} |",
  f"| audited `get` (in process, {res['get']['subjects']:,} subjects) | p50 {res['get']['p50_ms']:.3f} ms, p99 {res['get']['p99_ms']:.3f} ms | | p99 < 5 ms | {'yes' if res['get']['p99_ms'] < 5 else 'no'} |",
]
for k, label in (("count_where", "DP count --where country=DE,age>=30"), ("sum", "DP sum annual_income"), ("grouped_mean", "DP mean age --group-by country")):
    md.append(f"| {label} | {q[k]['dp_ms']:.1f} ms | raw SQL {q[k]['raw_sql_ms']:.1f} ms | {q[k]['ratio']:.2f} (<= 1.5) | {'yes' if q[k]['ratio'] <= 1.5 else 'no'} |")
md += [
  f"| key rotation, DEKs re-wrapped/s | {f(res['rotate']['deks_per_s'])} ({res['rotate']['rewrapped']:,} in {res['rotate']['seconds']:.1f} s) | | 1,000,000 in {1_000_000/res['rotate']['deks_per_s']:.1f} s (< 60 s) | {'yes' if 1_000_000/res['rotate']['deks_per_s'] < 60 else 'no'} |",
  f"| bulk erasure, subjects/s | {f(res['erase']['subjects_per_s'])} | | >= 500 | {'yes' if res['erase']['subjects_per_s'] >= 500 else 'no'} |",
  f"| audit append, entries/s (batches of 1,000) | {f(res['audit']['append_per_s'])} | Crosby & Wallach: 1,750-10,500 | >= 50,000 | {'yes' if res['audit']['append_per_s'] >= 50000 else 'no'} |",
  f"| audit export verification, entries/s | {f(res['audit']['verify_per_s'])} (store: {f(res['audit']['verify_store_per_s'])}) | | | |",
  f"| discrete Laplace samples/s (CSPRNG) | {f(res['noise']['samples_per_s'])} | | >= 1,000,000 | {'yes' if res['noise']['samples_per_s'] >= 1e6 else 'no'} |",
  f"| AES-256-GCM seal, 64 B, ops/s | {f(res['seal64']['ops_per_s'])} | `openssl speed -evp aes-256-gcm -bytes 64` {f(res['seal64']['openssl_speed_ops_per_s'])} | {res['seal64']['ops_per_s']/res['seal64']['openssl_speed_ops_per_s']:.2f} (>= 0.55) | {'yes' if goals[-1][1] >= 0.55 else 'no'} |",
  "", *plot_lines(res), "## How each is measured", "",
  "- **ingest**: `pvbench vault` runs `Vault.ingestProfiles` (validation pass, then sealing and writing on two threads, transactions of 65,536 records handed to the writer in chunks of 4,096, audit entry per transaction) on a generated CSV; `pvbench plain` parses and validates the same CSV with the same code and inserts the same rows as plaintext into the same table shapes with the same raw statement binding and batch size, no crypto; the Python peer (`bench/peers/ingest_peer.py`) is sqlite3 + `cryptography` with the same per-field AES-GCM, HMAC pseudonyms and blind indexes, the same tables and indexes (8-byte pseudonym key, 64-bit blind-index MACs), the same batch size and no validation. Each runs in its own process; peak RSS is `ru_maxrss`.",
  "- **get**: 3,000 `Vault.get` calls for random subjects (role check, DEK unwrap, 3 field decryptions, audit entry committed and signed) in process.",
  "- **DP queries**: `Vault.query` (gate, budget transaction with audit entry, SQL over all-consenting subjects, noise) against the plain SQL aggregate with the same join and filter, interleaved, median of 5.",
  "- **rotation / erasure**: `keys rotate` over every subject of the store; `erase --subjects` of 2,000 subjects spread over it (batches of 500, WAL checkpoint per batch).",
  "- **audit**: entries appended in transactions of 1,000 (one signed checkpoint each), then exported and verified.",
  "",
  *kmeans_lines(res["kmeans"]),
  "",
  "## Profile of the slowest goal: ingest against the Python peer (2026-11-22)",
  "",
  "`perf record -g` of `pvbench vault` on 1,000,000 profiles, before and after (single runs on this machine; the table above is the harness's own run).",
  "",
  "- **Before**: the writer thread was busy 95% of the time (it is the bottleneck; the parse-and-seal thread used 41% of the samples), and the process wrote 5.2 GB for a 628 MB file: every 16,384-record transaction rewrote most pages of the two random-key indexes, the UNIQUE index of 32-byte pseudonyms (46 MB) and the blind index of 16-byte MACs (59 MB), together larger than the 64 MB page cache.",
  "- **Changes**: 8-byte keys in both (an expression index on the pseudonym's first 8 bytes, lookups compare the whole pseudonym, uniqueness is the writer's find-then-insert; 64-bit blind-index MACs, every match confirmed by decryption): random-key indexes 105 -> 60 MB. Transactions of 65,536 records (was 16,384) reach the writer in chunks of 4,096, so memory no longer grows with the transaction: 3.1-4.0 million 512-byte blocks written instead of 10-14 million, peak RSS 189 -> 136 MB. Tried and not kept: 8 KB pages (no change), a larger WAL autocheckpoint (+19% at 16,384-record transactions, nothing measurable at 65,536).",
  "- **After**: 18,000 -> 25,600 profiles/s in single runs; the harness run above 28,489/s, 0.86 of plain, 2.30x the peer (1.91x before; the peer also got faster with the smaller indexes and batches: 10,054 -> 12,406/s).",
  "- **What is left**: the writer is still busy about 94% of the time on SQLite B-tree inserts (nine rows per profile, five of them `pii` rows), and pass 1 re-reads the file (5 s of 35 s). The peer spends about as long in SQLite as we do, plus its Python: 3x would need our SQLite work per profile below half the peer's Python overhead, which in our estimate takes one `pii` row per subject and no second pass (changes to the data model and to the nothing-written-on-bad-input guarantee), not made.",
]
open("docs/benchmarks.md", "w").write("\n".join(md) + "\n")
for n, v, g, op in goals:
    print(f"{'MET ' if met(v, g, op) else 'MISS'} {n}: {v:,.3f}")
print("wrote bench/results.json and docs/benchmarks.md")
