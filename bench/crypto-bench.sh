#!/usr/bin/env bash
# Single-thread AES-256-GCM seal throughput of VaultCrypto vs `openssl speed`, same machine, same run.
#
# usage: bench/crypto-bench.sh [--bytes N] [--seconds S] [--runs R]
#
# Baseline: `openssl speed -evp aes-256-gcm -bytes N` (the figure asked for: EVP_EncryptUpdate on
# one context, no per-message IV/AAD/tag) and, for reference, `openssl speed -aead ...` (a full
# AEAD operation per message: set IV, AAD, update, final, tag). openssl prints thousands of bytes
# per second; ops/s = that * 1000 / N.
#
# Ours: CryptoBenchmark.sealThroughput (VaultCrypto), single thread, N-byte plaintext, 50-byte
# AAD, in three nonce modes: random (fresh random nonce per seal, as the store does), counter
# (no RNG), envelope (the full Envelope.sealField call). The command that runs it must print
# lines "seal_<mode> <bytes> <ops_per_second>":
#   CRYPTOBENCH_CMD   command to run (default: the release `cryptobench` of the development
#                     package in $CRYPTOBENCH_PACKAGE, default ../scratch-crypto, built if needed)
# Figures are medians of --runs runs (default 3), openssl and ours alternating.
# Writes bench/out/crypto-bench.json and prints a table.
set -euo pipefail

bytes=64
seconds=2
runs=3
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bytes) bytes="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $1" >&2; exit 2 ;;
  esac
done

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
out_dir="$here/out"
mkdir -p "$out_dir"

if [[ -z "${CRYPTOBENCH_CMD:-}" ]]; then
  package="${CRYPTOBENCH_PACKAGE:-$root/../scratch-crypto}"
  if [[ ! -f "$package/Package.swift" ]]; then
    echo "error: set CRYPTOBENCH_CMD (a command printing 'seal_<mode> <bytes> <ops>') or CRYPTOBENCH_PACKAGE" >&2
    exit 2
  fi
  (cd "$package" && swift build -c release --product cryptobench >&2)
  CRYPTOBENCH_CMD="$package/.build/release/cryptobench"
fi

openssl_ops() {  # $1: extra flag ("" or -aead)
  local line
  # shellcheck disable=SC2086
  line="$(openssl speed -seconds "$seconds" $1 -evp aes-256-gcm -bytes "$bytes" 2>/dev/null | grep -E '^(AES-256-GCM|aes-256-gcm)' | tail -1)"
  awk -v b="$bytes" '{ v=$NF; sub(/k$/, "", v); printf "%.0f\n", v * 1000 / b }' <<<"$line"
}

median() { sort -n | awk '{ a[NR]=$1 } END { if (NR % 2) print a[(NR+1)/2]; else printf "%.0f\n", (a[NR/2]+a[NR/2+1])/2 }'; }

declare -a o_plain o_aead s_random s_counter s_envelope
for ((i = 1; i <= runs; i++)); do
  echo "run $i/$runs ..." >&2
  o_plain+=("$(openssl_ops "")")
  ours="$($CRYPTOBENCH_CMD --bytes "$bytes" --seconds "$seconds")"
  s_random+=("$(awk '$1=="seal_random"{print $3}' <<<"$ours")")
  s_counter+=("$(awk '$1=="seal_counter"{print $3}' <<<"$ours")")
  s_envelope+=("$(awk '$1=="seal_envelope"{print $3}' <<<"$ours")")
  o_aead+=("$(openssl_ops -aead)")
done

m_plain=$(printf '%s\n' "${o_plain[@]}" | median)
m_aead=$(printf '%s\n' "${o_aead[@]}" | median)
m_random=$(printf '%s\n' "${s_random[@]}" | median)
m_counter=$(printf '%s\n' "${s_counter[@]}" | median)
m_envelope=$(printf '%s\n' "${s_envelope[@]}" | median)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

printf '\nAES-256-GCM seal, %s-byte messages, single thread, median of %s runs of %ss\n' "$bytes" "$runs" "$seconds"
printf '%-46s %14s %10s\n' "measurement" "ops/s" "vs openssl"
printf '%-46s %14s %10s\n' "openssl speed -evp aes-256-gcm (baseline)" "$m_plain" "1.00"
printf '%-46s %14s %10s\n' "openssl speed -aead -evp aes-256-gcm" "$m_aead" "$(ratio "$m_aead" "$m_plain")"
printf '%-46s %14s %10s\n' "VaultCrypto seal, random nonce (store path)" "$m_random" "$(ratio "$m_random" "$m_plain")"
printf '%-46s %14s %10s\n' "VaultCrypto seal, counter nonce" "$m_counter" "$(ratio "$m_counter" "$m_plain")"
printf '%-46s %14s %10s\n' "VaultCrypto Envelope.sealField" "$m_envelope" "$(ratio "$m_envelope" "$m_plain")"

cat >"$out_dir/crypto-bench.json" <<JSON
{"bytes": $bytes, "seconds": $seconds, "runs": $runs,
 "openssl_speed_evp_ops": $m_plain, "openssl_speed_aead_ops": $m_aead,
 "seal_random_ops": $m_random, "seal_counter_ops": $m_counter, "seal_envelope_ops": $m_envelope,
 "ratio_random_vs_openssl": $(ratio "$m_random" "$m_plain"), "ratio_envelope_vs_openssl": $(ratio "$m_envelope" "$m_plain"),
 "target_ratio": 0.55}
JSON
echo "wrote $out_dir/crypto-bench.json" >&2
