#!/usr/bin/env bash
# Several profilectl processes at once on one store: an ingest, 8 DP queries racing for the
# budget, a bulk erasure, a key rotation and a stream of audited reads. Afterwards: no process
# saw "database is locked" or any other failure, no write was lost (subject count exact), the
# budget is not overspent, every DEK is readable, and the audit chain verifies.
#
#   PROFILECTL=path/to/profilectl PVBENCH=path/to/pvbench scripts/concurrency-test.sh [--profiles N]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
n=20000
[ "${1:-}" = "--profiles" ] && n=$2
P=${PROFILECTL:-$repo/.build/debug/profilectl}
G=${PVBENCH:-$repo/.build/debug/pvbench}
# Relative paths are relative to where the script was started (it works in a temporary folder).
case $P in /*) ;; *) P=$PWD/$P ;; esac
case $G in /*) ;; *) G=$PWD/$G ;; esac
[ -x "$P" ] && [ -x "$G" ] || { echo "concurrency-test: no profilectl or pvbench at $P, $G" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/pv-conc.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
export PROFILEVAULT_STORE=$work/s.sqlite PROFILEVAULT_KEYS=$work/k.json PROFILEVAULT_POLICY=$repo/policies
fail() { echo "concurrency-test: FAIL: $*" >&2; exit 1; }
"$P" keys generate --out k.json >/dev/null
"$P" init >/dev/null
"$G" gen $((2 * n)) p.csv >/dev/null
head -1 p.csv > a.csv; sed -n "2,$((n + 1))p" p.csv >> a.csv
head -1 p.csv > b.csv; sed -n "$((n + 2)),$((2 * n + 1))p" p.csv >> b.csv
"$P" ingest profiles a.csv >/dev/null
cut -d, -f1 a.csv | tail -n +2 > ids.txt
"$P" consent grant --purpose analytics --subjects ids.txt --role privacy_officer >/dev/null
head -500 ids.txt > erase.txt
last=$(tail -1 ids.txt)

: > rc
# `set -e` holds in subshells too: record each exit status explicitly.
( s=0; "$P" ingest profiles b.csv > /dev/null 2> e.ingest || s=$?; echo "ingest $s" >> rc ) &
for i in $(seq 8); do ( s=0; "$P" query count --purpose analytics --epsilon 0.6 --fresh --role trainer > /dev/null 2> "e.q$i" || s=$?; echo "query $s" >> rc ) & done
( s=0; "$P" erase --subjects erase.txt --role privacy_officer > /dev/null 2> e.erase || s=$?; echo "erase $s" >> rc ) &
( s=0; "$P" keys rotate --role privacy_officer > /dev/null 2> e.rotate || s=$?; echo "rotate $s" >> rc ) &
( for i in $(seq 20); do s=0; "$P" get --subject "$last" --purpose customer_support --role support > /dev/null 2>> e.get || s=$?; [ $s -eq 0 ] || echo "get $s" >> rc; done ) &
wait

if grep -qi "locked\|busy" e.* 2>/dev/null; then fail "a process reported a locked database: $(grep -hi 'locked\|busy' e.* | head -1)"; fi
grep -q "ingest 0" rc || fail "the concurrent ingest failed: $(cat e.ingest)"
grep -q "erase 0" rc || fail "the erasure failed: $(cat e.erase)"
grep -q "rotate 0" rc || fail "the rotation failed: $(cat e.rotate)"
grep -q "^get " rc && fail "an audited read failed: $(head -1 e.get)"
ok=$(grep -c "query 0" rc || true); denied=$(grep -c "query 77" rc || true)
[ "$ok" -eq 6 ] && [ "$denied" -eq 2 ] || fail "queries: $ok ran and $denied were refused; want 6 and 2 (budget 4.0, 8 x 0.6): $(sort rc | uniq -c | tr "\n" " ") $(cat e.q* | head -2)"
subjects=$("$P" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["subjects"])')
[ "$subjects" -eq $((2 * n - 500)) ] || fail "subjects $subjects, want $((2 * n - 500)): a write was lost"
"$P" audit verify --role auditor >/dev/null || fail "the audit chain does not verify"
"$P" keys rotate --resume --role privacy_officer >/dev/null || fail "keys rotate --resume"
"$P" get --subject "$last" --purpose customer_support --role support >/dev/null || fail "a subject does not decrypt after rotation"
echo "concurrency-test: ok: ingest, 8 queries (6 ran, 2 refused by the budget), erasure, rotation and 20 reads at once; $subjects subjects; audit chain verifies"
