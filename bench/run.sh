#!/usr/bin/env bash
# The benchmark harness: every headline figure beside its baseline, measured in the same run.
#
#   bench/run.sh [--quick] [--profiles N] [--runs R]
#
# --quick: 100,000 profiles, one repetition of the slow parts (under 8 minutes on 2 cores).
# Default: 1,000,000 profiles, 3 repetitions. Release build. Writes bench/results.json and
# docs/benchmarks.md. Peers: plain SQLite with no crypto (pvbench plain), a Python peer
# (sqlite3 + cryptography, bench/peers/), raw SQL for the DP queries, `openssl speed`.
set -euo pipefail
cd "$(dirname "$0")/.."
profiles=1000000 runs=3 quick=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1; profiles=100000; runs=1; shift ;;
    --profiles) profiles=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    *) echo "usage: $0 [--quick] [--profiles N] [--runs R]" >&2; exit 64 ;;
  esac
done
echo "building (release)..." >&2
swift build -c release --product pvbench >/dev/null
bin=.build/release/pvbench

# Python peer environment (pinned; reuses system packages when they match the pins).
if [ ! -x bench/.venv/bin/python ]; then
  python3 -m venv --system-site-packages bench/.venv
fi
bench/.venv/bin/pip install -q -r bench/peers/requirements.txt >/dev/null 2>&1 || echo "warning: pip install failed; the Python peer uses what is installed" >&2
py=bench/.venv/bin/python

work=$(mktemp -d /tmp/pv-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp keys-example/keyring.json "$work/keyring.json"; chmod 600 "$work/keyring.json"
echo "generating $profiles profiles..." >&2
"$bin" gen "$profiles" "$work/profiles.csv" >/dev/null
out="$work/runs.jsonl"; : > "$out"
for i in $(seq "$runs"); do
  echo "ingest run $i/$runs..." >&2
  "$bin" plain "$work/profiles.csv" "$work/plain.sqlite" policies >> "$out"
  "$bin" vault "$work/profiles.csv" "$work/vault.sqlite" policies "$work/keyring.json" >> "$out"
  "$py" bench/peers/ingest_peer.py "$work/profiles.csv" "$work/peer.sqlite" >> "$out"
  rm -f "$work"/*.sqlite*
done
echo "get, DP queries, key rotation, erasure..." >&2
"$bin" suite "$work/profiles.csv" policies "$work/keyring.json" "$work/suite" >> "$out"
echo "audit, noise, AES-GCM..." >&2
"$bin" audit $(( quick ? 100000 : 200000 )) policies "$work/keyring.json" >> "$out"
"$bin" noise 2000000 >> "$out"
for i in $(seq "$runs"); do
  "$bin" seal 64 2 >> "$out"
  openssl speed -seconds 2 -evp aes-256-gcm -bytes 64 2>/dev/null \
    | awk 'tolower($1) == "aes-256-gcm" {v=$2; sub(/k$/,"",v); printf "{\"mode\":\"openssl\",\"ops_per_second\":%f}\n", v*1000/64}' >> "$out"
done
"$py" bench/report.py "$out" "$profiles" "$runs" "$quick"
