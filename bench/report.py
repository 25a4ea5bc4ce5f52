#!/usr/bin/env python3
"""Turns bench/run.sh's raw runs into bench/results.json and docs/benchmarks.md (with PNG plots
in docs/img/bench-*.png when matplotlib is installed).

    report.py RUNS.jsonl PROFILES RUNS QUICK     (what bench/run.sh calls)
    report.py --from-results                      (re-render the page and plots from bench/results.json)
"""

# Measurements written with the generated page when docs/benchmarks.md has no hand-written
# sections yet (otherwise the page's own sections are kept as they stand: see the end).
ISSUE19_SECTION = r"""
## Ingest with record digests and ingest runs (issue 19, part 4): instruction counts

Profile ingest now computes a keyed digest of each record (HMAC-SHA-256 under
`pv:record-digest` over a binary encoding of the values, on the parse thread, not the writer),
reads it with the pseudonym lookup the writer already makes, and writes it with the subject row
(three more bound values: the digest and the ingest run that created or changed the subject);
each transaction adds one statement to the run's row. No statement is added per record. An
unchanged record (same digest) writes nothing at all, so a nightly full re-sync of unchanged
customers is cheaper than before.

`valgrind --tool=callgrind` of `pvbench vault` on the same generated 10,000-profile CSV (all
records new), debug builds (stripped; no release build fitted in the time on a machine shared by
four builders), before (582c824) and after (a9cd3b3):

| command | before | after | after / before |
|---|---|---|---|
| `pvbench vault p10k.csv` (ingest, debug build) | 6,408,853,780 | 6,870,493,752 | 1.072 |

A first version that formatted each value as text for the digest measured 7,089,792,107 (1.106).
Debug builds exaggerate the digest's byte-by-byte encoding (bounds and exclusivity checks on
every append).

Wall clock, release builds, 500,000 generated profiles (`pvbench gen 500000`), three alternating
runs of `pvbench plain`, `pvbench vault` at 582c824 and `pvbench vault` after the merge of issue
19 (restriction probes, record digests, ingest runs), on the same 2-core machine (the third
"after" run overlapped the start of a debug build):

| | run 1 | run 2 | run 3 | median | / plain |
|---|---|---|---|---|---|
| plain SQLite, no crypto | 7.21 s | 7.20 s | 7.46 s | 7.21 s | 1.00 |
| vault ingest, before | 7.27 s | 7.38 s | 7.43 s | 7.38 s | 1.02 |
| vault ingest, after | 7.92 s | 7.85 s | 8.61 s | 7.92 s | 1.10 |

After / before: 1.07 (the median), close to the instruction-count ratio: the digest is paid on a
thread that was not idle. The goal (>= 0.5 of plain) is still met with room; the next full
`bench/run.sh` will put the figure in the table above.
"""

ISSUE18_SECTION = r"""
## The sealed gate and the storage seam (issue 18): instruction counts

The machine was shared by several builds, so wall-clock figures were useless (the same binary
varied 3x between rounds); `valgrind --tool=callgrind` counts instructions, which do not depend
on the load. Each pair is the same pvbench command on the same 10,000-profile CSV, release
builds, stripped: before (e133635, `Vault.store` a public `ProfileStore`) and after (the gate
sealed, `Vault` calling an `any StorageEngine`, in-memory exports; the conformance fixes'
rounding change included in the query pair).

| command | before | after | after / before |
|---|---|---|---|
| `pvbench get p10k.csv ... 2000` (ingest 10,000, 2,000 bare and 2,000 audited gets) | 5,097,429,043 | 5,093,462,436 | 0.999 |
| `pvbench audit 5000` (append, export, verify) | 3,754,917,762 | 3,767,798,329 | 1.003 |
| `pvbench query p10k.csv ... 3` (DP count/sum/grouped mean against raw SQL) | 3,680,414,527 | 3,681,428,362 | 1.000 |
| `pvbench vault p10k.csv` (ingest) | 2,035,944,734 | 2,025,885,050 | 0.995 |

So the SQLite figures are unchanged: every difference is under 0.5%. Separately, the SQL
rounding fix measured 0.19 -> 0.25 s for one centred coordinate over 1,000,000 rows in an
in-memory SQLite 3.40 (a plain sum unchanged); the 10,000-subject query pair above does not show
it.

## PostgreSQL (issue 18, part 5)

`scripts/with-postgres.sh bench/postgres.sh --profiles 1000000 --seconds 8` (release build; a
private PostgreSQL 15 cluster, `fsync=off`, on the same 2-core machine as the node, the load
generator and the baseline's psql; ratios within one run; 2026-12-06, machine otherwise idle).
Two runs of the whole script: the first before the read change below, the second after it
(ingest and queries had not changed between them).

| figure | ProfileVault | baseline (same run) | ratio | target |
|---|---|---|---|---|
| ingest of 1,000,000 profiles (`profilectl ingest profiles`, as a node role) | 42.13 s (run 1: 53.08 s) | plain `COPY` of the same CSV into a table of the same columns and indexes, no crypto: 9.97 s (run 1: 13.17 s) | COPY / vault 0.237 (run 1: 0.248) | >= 0.5: **not met** |
| peak RSS of that ingest | 251.4 MB (run 1: 250.3 MB) | | | < 300 MB: met |
| DP count over 1,000,000 subjects (consent join) | 0.596 s | raw SQL count: 0.592 s | 1.01 (run 1: 1.27) | <= 1.5: met |
| DP sum of annual_income | 0.796 s | raw SQL clamped sum: 0.561 s | 1.42 (run 1: 1.11) | <= 1.5: met |
| DP mean of age grouped by country | 0.910 s | raw SQL grouped clamped mean: 0.658 s | 1.38 (run 1: 0.97) | <= 1.5: met |
| audited get, in process, one at a time (`pvbench gets`, 2,000 calls) | p50 3.98 ms, p99 5.98 ms (run 1: 4.87 / 7.20 ms) | | | p99 < 5 ms: **not met** |
| audited GET over HTTP, 1 node, 1 connection | 190 req/s, p50 5.18 ms, p99 7.70 ms | | | |
| audited GET over HTTP, 1 node, 16 connections | 960 req/s, p50 16.2 ms, p99 27.8 ms | | | |
| audited GET over HTTP, 2 nodes, 16 connections in all | 776 req/s, p50 20.6 ms, p99 30.3 ms | | | |
| audit appends, one entry a transaction, 1 thread (`pvbench append`) | 391 /s (2.56 ms each) | | | |
| audit appends, 8 threads of one node (group commit) | 1,592 /s | | | |

The DP times are whole `profilectl query` processes (start, opening the pool, the policy check,
the charge with its audit entry, the aggregate) against one psql statement; the aggregate
itself is one SQL statement on the server. Single runs each: between the two runs the same
query moved by up to 0.3 in ratio, so the figures say "about the raw aggregate", not which of
the three is cheaper.

**Ingest.** Per 300,000 profiles, the server's statements took about 9.3 s (the `pii` insert 4.0,
`subjects` 2.3, `attributes` 1.6, ids 1.5; from `log_min_duration_statement`) and the node 8.5 s of
CPU (parsing, validating, sealing five fields and wrapping a key per profile, encoding the
arrays); `COPY` takes about 2.5 s of the server for plain rows. On two cores shared by both,
that puts the ratio's ceiling near 0.28 whatever the overlap; 0.5 needs the database on cores
of its own (or a node doing less work than sealing). What this round changed, each measured
with the ingest step of bench/postgres.sh at 300,000 profiles and the server's statement times
from `log_min_duration_statement` (on a machine shared with a helper's builds, so single pairs):
- **Pipeline**: the validation pass on a thread of its own beside parsing and sealing, and a
  writer thread that has transaction N written while the node seals N+1; at most two
  transactions in memory.
- **Packed batches**: a transaction's sealed profiles in one byte buffer with offsets instead
  of five or six small arrays per profile (about 1.7 KB a profile, with allocator rounding):
  peak RSS 292 -> 213 MB at 300,000 with the pipeline, then 188 MB once the node waits for the
  writer after handing it a transaction rather than before (the runs in the table above still
  held three transactions at once, not two; found in review).
- **No foreign keys on `pii` and `attributes`** (migration 6): the per-row RI trigger was about
  half of those inserts' server time (pii 8.0 -> 4.0 s, attributes 4.4 -> 1.6 s in one pair of
  runs); the rows are written and erased with their subject in one transaction, so the check
  repeated what the engine guarantees.
- **Plain inserts** of `pii` and `attributes` when the statement created every subject (pii
  3.9 -> 3.3 s, attributes 1.6 -> 0.9 s); ids from `nextval` on a regclass taken once.
- Together: 22.06 s (0.144 of COPY, previous session) -> 17.0-17.8 s at 300,000 on a loaded
  machine; at 1,000,000 on an idle one, 0.237-0.248 of COPY.
- Smaller transactions (`--batch-size 16384`) measured 15.5 s and 103 MB at 300,000: the
  pipeline fills and drains once per transaction. The default stays 65,536 on both engines (one
  audit entry per transaction, the same on both).

**Audited get.** One get is seven round trips to the server: the read (one statement, no
`BEGIN`/`COMMIT` since this round: p50 4.87 -> 3.98 ms), then the audit append (`BEGIN`, lock
and verify the head in two statements, the entries and their checkpoint in one statement since
this round, move the head, `COMMIT`). On this machine a round trip costs about 0.4 ms (node,
server and load all on two cores), so p99 stays near 6 ms; the SQLite engine's figure is
0.65-0.82 ms. Reaching 5 ms needs fewer round trips per append (the head's lock and its
verification in one statement, which must then detect a snapshot older than the lock) or a
server on cores of its own; not done.

**The audit head's ceiling.** Every append, from every node, takes the head row until its
transaction commits: about 2.6 ms uncontended, so about 390 transactions a second across the
cluster. Within a node, concurrent appends share one transaction (group commit), so 8 threads
append 1,592 entries a second; two nodes each do their own groups, taking turns at the head.
That is why 2 nodes answered fewer GETs than 1 here (776 against 960 req/s): on 2 cores the
second node process also competes for CPU with the server and the load generator.

**The cold-pool stall, fixed.** A fresh node's first burst of requests used to wait seconds (16
concurrent GETs: every first answer after 14.8 s). The cause was not the connection pool: the
service ran blocking store work on `DispatchQueue.global()`, whose threads on Linux are shared
with Swift's cooperative executor and grown about once a second while all are blocked; a
PostgreSQL call blocks its thread until a task on that executor answers. The service now runs
store work on threads of its own (`BlockingPool`): first answers after 0.07 s, 1,030 req/s in
the first 4 s (16 keep-alive clients started together against a node just started, 2,000
profiles, release build).

**SQLite figures.** The table at the top is `bench/run.sh`'s run of 2026-12-06 12:38 (one run);
against its run of 2026-11-22 (medians of 3, before issues 16 to 18):

| figure | 2026-12-06 | 2026-11-22 |
|---|---|---|
| ingest, profiles/s | 48,073; plain 48,002 (1.00); Python peer 17,726 (2.71 x) | 45,425; plain 44,868 (1.01); peer 14,462 (3.14 x) |
| audited get | p50 0.203 ms, p99 0.672 ms | p50 0.260, p99 0.822 ms |
| DP count --where | 1.56 x raw SQL | 1.13 |
| DP sum annual_income | 2.85 x raw SQL | 1.35 |
| DP mean age --group-by country | 1.46 x raw SQL | 1.14 |
| key rotation, DEKs/s | 113,051 | 151,946 |
| bulk erasure, subjects/s | 1,029 | 1,482 |
| audit append, entries/s | 53,320 | 56,060 |

Issue 18's changes leave the SQLite engine's work as it was: the instruction counts above
(before and after the gate and the seam) differ by under 0.5%, and this round changed no SQLite
statement. Ingest against plain SQLite, get and audit append are unchanged within noise; the
peer ratio fell because the Python peer ran faster in this run (17,726 against 14,462/s; ours
48,073 against 45,425/s; a single run of each). But the DP query ratios, key rotation and
erasure are slower than on 2026-11-22. The DP SQL has gained per-row work since then that the
raw aggregate does not do: the storage-class and bounds check of every value read
(`damageCondition`, issue 17) and the exact rounding of every contribution (issue 16). The sum's
2.85 and the count's 1.56 miss the 1.5 goal. Found here; not from issue 18.

**Part of it mended here.** The storage-class check no longer calls `typeof()` where SQLite's
order of storage classes does the same (numbers < TEXT < BLOB: a bounded number's `x > hi`
catches TEXT and BLOB; a TEXT column's damage is `x >= X''`), and a centred contribution reads
its sign from the value rather than computing the expression twice. Both are exact: the new
check flags exactly what the `typeof` form flags for 27 values of every storage class in
columns of each type and affinity (`DamageConditionTests`), and the engine conformance suite,
which compares every sum with the exact reference, fails with 527 issues when the sign is
planted wrong. `pvbench query p.csv policies k.json 5` on 1,000,000 profiles, medians of 5
interleaved: count --where 1.56 -> 0.92 and 1.35 (two runs), sum 2.85 -> 1.78 and 1.79, grouped
mean 1.46 -> 1.61 and 1.63 (this query's check was already cheap; the two runs of today's change
against one harness run are within this machine's noise). The sum still misses 1.5: its
remaining cost is the exact rounding of each contribution (`CAST(x * 0.5 + h AS INTEGER)`,
about a third more than the raw `SUM(x)` per row in the sqlite3 shell). Open.
### Erasure on PostgreSQL by batch (issue 18 leftover, 2026-12-06)

`erase --subjects` on PostgreSQL took about 15 round trips per subject (a lock, a count, seven
deletes, a clock read, the register update, the audit append, the suppression insert). A batch
of 500 now runs a fixed number of statements: one that locks and deletes every table's rows of
the whole batch and returns the counts per subject, one register update, one audit append (an
entry per subject, one checkpoint), one suppression insert. `scripts/with-postgres.sh
bench/pg-erase.sh 20000 2000 OLD NEW OLD NEW` (debug builds of the commit before and after,
alternated, each on a fresh store of 20,000 generated profiles; the machine was loaded by
builds, so the absolute figures are noisy): before 84.3 s and 43.8 s (24 and 46 subjects/s),
after 8.1 s and 8.3 s (248 and 242 subjects/s): 5-10x. `audit verify` passed after each.
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
  "- **ingest**: `pvbench vault` runs `Vault.ingestProfiles` (three threads: the validation pass at a lower priority, parsing and sealing, and the writer; transactions of 65,536 records handed to the writer in chunks of 4,096, the first of them held open until validation has passed; audit entry per transaction) on a generated CSV; `pvbench plain` parses and validates the same CSV with the same code and inserts the same rows as plaintext into the same table shapes with the same raw statement binding and batch size, no crypto; the Python peer (`bench/peers/ingest_peer.py`) is sqlite3 + `cryptography` with the same per-field AES-GCM, HMAC pseudonyms and blind indexes, the same tables and indexes (store format 3: 8-byte pseudonym key, one `pii` row per subject with its 64-bit blind-index MACs, each indexed), the same batch size and no validation. Each runs in its own process; peak RSS is `ru_maxrss`.",
  "- **get**: 3,000 `Vault.get` calls for random subjects (role check, DEK unwrap, 3 field decryptions, audit entry committed and signed) in process.",
  "- **DP queries**: `Vault.query` (gate, budget transaction with audit entry, SQL over all-consenting subjects, noise) against the plain SQL aggregate with the same join and filter, interleaved, median of 5.",
  "- **rotation / erasure**: `keys rotate` over every subject of the store; `erase --subjects` of 2,000 subjects spread over it (batches of 500, WAL checkpoint per batch).",
  "- **audit**: entries appended in transactions of 1,000 (one signed checkpoint each), then exported and verified.",
  "",
  *kmeans_lines(res["kmeans"]),
  "",
  "## Profile of the slowest goal: ingest against the Python peer",
  "",
  "`perf record -g` of `pvbench vault` on 1,000,000 profiles, before and after each round (single runs on this machine, which is noisy: the same binary varies by about 10% from run to run, so changes were compared in alternating pairs; the table above is the harness's own run).",
  "",
  "**Round 1** (store format 2). The writer thread was the bottleneck (busy 95%) and the process wrote 5.2 GB for a 628 MB file: every transaction rewrote most pages of the two random-key indexes (32-byte pseudonyms, 16-byte MACs; 105 MB, more than the 64 MB page cache). 8-byte keys in both (an expression index on the pseudonym's first 8 bytes; 64-bit MACs, every match confirmed by decryption) and transactions of 65,536 records handed to the writer in chunks of 4,096: 18,000 -> 25,600 profiles/s, peak RSS 189 -> 136 MB, 2.30x the peer. Not kept: 8 KB pages, a larger WAL autocheckpoint.",
  "",
  "**Round 2** (store format 3). Before: 26,352 profiles/s (37.9 s) against the peer's 13,351/s, 1.97x in that pair of runs. Pass 1 (validation) took 5.5 s alone before the pipeline started; then the writer was busy 93-100%, 13.5% of it in `sqlite3BtreeIndexMoveto`: eleven B-tree seeks per profile (five `pii` rows in a WITHOUT ROWID table, two blind-index rows and their subject index, the pseudonym key and the lookup before it). The parse thread spent a quarter of its time in Swift's run-time exclusivity checks and generic-metadata lookups.",
  "",
  "- **One `pii` row per subject** (migration `v6-one-pii-row`): a ciphertext column per PII field and each lookup field's MAC beside it, indexed; no `blind_index` table. Per profile three appends to rowid tables and three random index entries plus the lookup, instead of nine rows: 37.9 -> 27.4 s.",
  "- **Pass 1 beside the pipeline**: validation reads the file on a thread of its own while the writer already fills its first transaction, which commits only when the whole file has passed (and rolls back when it fails); the CSV reader's loop works on locals and a `let` buffer (no exclusivity check per byte): pass 1 5.5 -> 2.7 s, and no longer in series: 27.4 -> about 24 s.",
  "- **Less work on the writer**: spent chunks are freed by the parse thread (freeing them was 5-9% of the writer's samples); ASCII fields skip UTF-8 validation; validation and sealing borrow the schema's field specs instead of copying them per record.",
  "- **A Bloom filter of stored pseudonym keys** lets the writer skip the lookup for a pseudonym that is certainly new (kept exact across writers by a `subjects_epoch` in `meta`): writer samples down 5-12%, 21.2 -> 19.7 s in alternating pairs.",
  "- **The validator at nice 10**: with three busy threads on two cores the writer got about 60% of a core until validation finished; at a lower priority the validator takes what the parse thread leaves (about 9 s for 1,000,000 profiles) and the first transaction may hold up to 524,288 records meanwhile: 25.1/21.6/22.1 s -> 21.9/19.8/20.5 s in alternating pairs.",
  "- **Fairness**: the Python peer and the plain baseline use the same layout (one `pii` row per subject, the MAC or lookup value beside it, the same indexes); the peer gained too, 74.9 -> 66-73 s.",
  "- **Tried, not kept**: WAL checkpoints on a thread of their own during ingest (three alternating pairs: 21.4-24.7 s against 21.8-24.5 s), a 128 MB page cache for bulk ingests (6 alternating pairs before the change above, 3 after: within the noise, +70 MB RSS).",
  f"- **After**: the harness run above, {i['encrypted_rows_per_s']:,.0f} profiles/s: {i['encrypted_rows_per_s']/i['plain_rows_per_s']:.2f} of plain, {i['encrypted_rows_per_s']/i['python_peer_rows_per_s']:.2f}x the peer ({i['python_peer_rows_per_s']:,.0f}/s), peak RSS {i['peak_rss_mb']:.0f} MB. The writer is still the bottleneck, now mostly in SQLite's B-tree code for the three random-key index entries per profile. The margin is thin and the peer is the noisier side: two harness runs of this code measured 3.19x (46,672 against 14,620/s) and 3.14x (45,425 against 14,462/s); the run before the validator's lower priority measured 2.77x, with the peer at 16,408/s (ours 45,398/s).",
]
# The hand-written sections of the page (every `## ` section this script does not generate,
# from the first of them to the end) are kept as they stand in docs/benchmarks.md; the
# sections kept in this file stand in only when the page has none.
GENERATED = ("## How each is measured", "## k-means against diffprivlib", "## Profile of the slowest goal")
kept = None
if os.path.exists("docs/benchmarks.md"):
  old_lines = open("docs/benchmarks.md").read().rstrip("\n").split("\n")
  start = next((k for k, l in enumerate(old_lines) if l.startswith("## ") and not l.startswith(GENERATED)), None)
  if start is not None: kept = old_lines[start:]
if kept:
  md += [""] + kept
else:
  md += ISSUE18_SECTION.split("\n")
  md += [""] + ISSUE19_SECTION.split("\n")
open("docs/benchmarks.md", "w").write("\n".join(md) + "\n")
for n, v, g, op in goals:
    print(f"{'MET ' if met(v, g, op) else 'MISS'} {n}: {v:,.3f}")
print("wrote bench/results.json and docs/benchmarks.md")
