#!/usr/bin/env bash
# Ingest and seal figures for issue 2, each beside its baseline measured in the same run.
#
#   bench/ingest-bench.sh [--profiles N] [--runs R]
#
# - ingest: N generated profiles (default 1,000,000) through `Vault.ingestProfiles` (validate
#   pass + sealed, batched write pass) vs the same CSV parsed and validated by the same code and
#   inserted as plaintext into the same table shapes with no crypto (pvbench plain). Each run is
#   its own process, so peak RSS (ru_maxrss) is that mode's alone.
# - seal: AES-256-GCM seal of a 64-byte field in process (fresh random nonce, as the store does)
#   vs `openssl speed -evp aes-256-gcm -bytes 64`.
# Medians of R runs (default 3). Writes bench/out/ingest.json and prints a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
profiles=1000000 runs=3
while [ $# -gt 0 ]; do
  case "$1" in
    --profiles) profiles=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    *) echo "usage: $0 [--profiles N] [--runs R]" >&2; exit 64 ;;
  esac
done
swift build -c release --product pvbench >/dev/null
bin=.build/release/pvbench
work=$(mktemp -d /tmp/pv-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp keys-example/keyring.json "$work/keyring.json"; chmod 600 "$work/keyring.json"
"$bin" gen "$profiles" "$work/profiles.csv" >/dev/null
mkdir -p bench/out
: > "$work/runs.jsonl"
for i in $(seq "$runs"); do
  "$bin" plain "$work/profiles.csv" "$work/plain.sqlite" policies >> "$work/runs.jsonl"
  "$bin" vault "$work/profiles.csv" "$work/vault.sqlite" policies "$work/keyring.json" >> "$work/runs.jsonl"
  "$bin" seal 64 2 >> "$work/runs.jsonl"
  openssl speed -seconds 2 -evp aes-256-gcm -bytes 64 2>/dev/null | awk 'tolower($1) == "aes-256-gcm" {v=$2; sub(/k$/,"",v); printf "{\"mode\":\"openssl\",\"ops_per_second\":%f}\n", v*1000/64}' >> "$work/runs.jsonl"
done
python3 - "$work/runs.jsonl" "$profiles" "$runs" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = lambda m, k: [r[k] for r in rows if r["mode"] == m]
med = statistics.median
plain, vault = med(by("plain", "rate")), med(by("vault", "rate"))
seal, ossl = med(by("seal", "ops_per_second")), med(by("openssl", "ops_per_second"))
out = {
  "profiles": int(sys.argv[2]), "runs": int(sys.argv[3]),
  "ingest": {"vault_profiles_per_s": vault, "plain_sqlite_rows_per_s": plain, "ratio": vault / plain,
             "goal_ratio": 0.5, "vault_peak_rss_mib": max(by("vault", "peak_rss_mib")),
             "plain_peak_rss_mib": max(by("plain", "peak_rss_mib")), "goal_peak_rss_mib": 300},
  "seal64": {"vault_ops_per_s": seal, "openssl_speed_ops_per_s": ossl, "ratio": seal / ossl, "goal_ratio": 0.55},
  "raw": rows,
}
json.dump(out, open("bench/out/ingest.json", "w"), indent=2)
i, s = out["ingest"], out["seal64"]
print(f"ingest {out['profiles']} profiles (median of {out['runs']}): vault {i['vault_profiles_per_s']:.0f}/s, plain SQLite {i['plain_sqlite_rows_per_s']:.0f}/s, ratio {i['ratio']:.2f} (goal >= 0.5); peak RSS vault {i['vault_peak_rss_mib']:.0f} MiB (goal < 300), plain {i['plain_peak_rss_mib']:.0f} MiB")
print(f"AES-256-GCM seal 64 B: vault {s['vault_ops_per_s']:.0f} ops/s, openssl speed {s['openssl_speed_ops_per_s']:.0f} ops/s, ratio {s['ratio']:.2f} (goal >= 0.55)")
PY
