#!/usr/bin/env bash
# Crash safety of profile ingest (SPEC §9: "Committed data survive kill -9 ... re-running the
# same file completes it"). For each trial: a fresh store, `profilectl ingest profiles` of a
# generated file, SIGKILL at a random moment, then checks:
#   1. `profilectl status` exits 0 (the store opens);
#   2. PRAGMA integrity_check == ok, no orphaned pii/attributes rows;
#   3. every subject present is complete: its pii row holds exactly customer_id + the non-empty
#      PII fields of its CSV record, its blind-index MACs match, it has an attributes row; the
#      subjects present are a whole number of batches, the first records of the file; the audit
#      log's ingest entries account for exactly these subjects;
#   4. a sample of subjects decrypts (`get --role support --purpose customer_support`) to the
#      values of the CSV;
#   5. `audit verify --role auditor` says ok;
#   6. re-running the same ingest succeeds with inserted + unchanged == N (the committed
#      records come back unchanged), then `status` says
#      subjects == N, and the store checks again (steps 2, 3, 5).
#
# Usage: scripts/crash-test.sh [--trials N] [--profiles N] [--batch-size N] [--keep DIR]
#   PROFILECTL=path/to/profilectl (default: .build-rel/release/profilectl, then .build/debug)
# Exit status: 0 when every trial passed, 1 on the first failure (with a message).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

trials=5 profiles=20000 batch=1000 keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --trials) trials=$2; shift 2 ;;
    --profiles) profiles=$2; shift 2 ;;
    --batch-size) batch=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "crash-test: unknown argument $1" >&2; exit 64 ;;
  esac
done

bin=${PROFILECTL:-}
if [ -z "$bin" ]; then
  for c in .build-rel/release/profilectl .build-rel/debug/profilectl .build/release/profilectl .build/debug/profilectl; do
    [ -x "$c" ] && { bin=$repo/$c; break; }
  done
fi
[ -n "$bin" ] && [ -x "$bin" ] || { echo "crash-test: no profilectl binary (set PROFILECTL=path)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "crash-test: python3 is needed" >&2; exit 1; }
helper=$repo/scripts/crash_check.py

work=${keep:-$(mktemp -d "${TMPDIR:-/tmp}/pv-crash.XXXXXX")}
mkdir -p "$work"
[ -z "$keep" ] && trap 'rm -rf "$work"' EXIT
csv=$work/profiles.csv
keys=$work/keyring.json
python3 "$helper" gen "$csv" "$profiles"
"$bin" keys generate --out "$keys" --json >/dev/null
export PROFILEVAULT_KEYS=$keys PROFILEVAULT_POLICY=$repo/policies

die() { echo "crash-test: trial $trial: FAIL: $*" >&2; exit 1; }

now_ms() { date +%s%3N; }

# Checks steps 1-5 on $store; prints the subject count.
check_store() {
  local store=$1 out sample cid got want
  PROFILEVAULT_STORE=$store "$bin" status --json >"$work/status.json" 2>"$work/status.err" \
    || die "status exited $? after the kill: $(cat "$work/status.err")"
  out=$(python3 "$helper" check "$store" "$keys" "$csv" "$batch" 2>"$work/check.err") || die "$(cat "$work/check.err")"
  local n; n=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["subjects"])' "$out")
  local s; s=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["subjects"])' "$work/status.json")
  [ "$n" = "$s" ] || die "status says $s subjects, the database holds $n"
  for cid in $(python3 -c 'import json,sys; print(" ".join(json.loads(sys.argv[1])["sample"]))' "$out"); do
    got=$(PROFILEVAULT_STORE=$store "$bin" get --subject "$cid" --purpose customer_support --role support --actor crash-test --json 2>"$work/get.err") \
      || die "get --subject $cid exited $?: $(cat "$work/get.err")"
    want=$(python3 "$helper" expect "$csv" "$cid")
    python3 - "$got" "$want" <<'PY' || die "get --subject $cid does not match its CSV record"
import json, sys
got, want = json.loads(sys.argv[1]), json.loads(sys.argv[2])
ok = got.get("customer_id") == want["customer_id"]
for f in ("email", "full_name", "phone"):
    if want[f]:
        ok = ok and got.get(f) == want[f]
    else:
        ok = ok and got.get(f) in (None, "")
if not ok:
    print("got %s\nwant %s" % (got, want), file=sys.stderr)
    sys.exit(1)
PY
  done
  PROFILEVAULT_STORE=$store "$bin" audit verify --role auditor --actor crash-test --json >"$work/verify.json" 2>"$work/verify.err" \
    || die "audit verify exited $?: $(cat "$work/verify.err")"
  python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))["ok"] is True else 1)' "$work/verify.json" \
    || die "audit verify: $(cat "$work/verify.json")"
  echo "$n"
}

# Calibrate: one full ingest tells how long a run takes with this binary and size.
trial=0
cal=$work/calibrate.sqlite
PROFILEVAULT_STORE=$cal "$bin" init --json >/dev/null
t0=$(now_ms)
PROFILEVAULT_STORE=$cal "$bin" ingest profiles "$csv" --batch-size "$batch" --json >/dev/null
full_ms=$(( $(now_ms) - t0 ))
rm -f "$cal" "$cal-wal" "$cal-shm"
echo "crash-test: $profiles profiles, batch $batch, full ingest $full_ms ms with $bin"

killed_mid=0
for trial in $(seq 1 "$trials"); do
  store=$work/trial-$trial.sqlite
  rm -f "$store" "$store-wal" "$store-shm"
  PROFILEVAULT_STORE=$store "$bin" init --json >/dev/null
  # A moment between 2% and 110% of a full run (the tail covers a kill during the last commit
  # or just after the end).
  delay_ms=$(python3 -c "import random; print(int($full_ms * random.uniform(0.02, 1.1)))")
  PROFILEVAULT_STORE=$store "$bin" ingest profiles "$csv" --batch-size "$batch" --json >"$work/ingest.out" 2>"$work/ingest.err" &
  pid=$!
  sleep "$(python3 -c "print($delay_ms / 1000)")"
  if kill -KILL "$pid" 2>/dev/null; then how="SIGKILL after ${delay_ms} ms"; killed_mid=$((killed_mid + 1)); else how="finished before the kill at ${delay_ms} ms"; fi
  wait "$pid" 2>/dev/null || true
  n=$(check_store "$store")
  # Re-run: completes the file.
  PROFILEVAULT_STORE=$store "$bin" ingest profiles "$csv" --batch-size "$batch" --json >"$work/rerun.json" 2>"$work/rerun.err" \
    || die "re-running the ingest exited $?: $(cat "$work/rerun.err")"
  python3 - "$work/rerun.json" "$profiles" "$n" <<'PY' || die "re-run counts wrong: $(cat "$work/rerun.json")"
import json, sys
r = json.load(open(sys.argv[1])); n = int(sys.argv[2]); before = int(sys.argv[3])
# The committed records are identical to the file's, so they come back unchanged (not updated).
sys.exit(0 if r["inserted"] + r["unchanged"] == n and r["unchanged"] == before and r["updated"] == 0 and r["rejected"] == 0 else 1)
PY
  after=$(check_store "$store")
  [ "$after" = "$profiles" ] || die "after the re-run the store holds $after subjects, expected $profiles"
  echo "crash-test: trial $trial/$trials ok: $how, $n subjects committed, re-run completed to $after"
  rm -f "$store" "$store-wal" "$store-shm"
done
echo "crash-test: all $trials trials passed ($killed_mid killed mid-ingest)"
