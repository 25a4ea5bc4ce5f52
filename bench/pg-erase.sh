#!/usr/bin/env bash
# usage: scripts/with-postgres.sh bench/pg-erase.sh N ERASE PROFILECTL... : per binary, a fresh PostgreSQL store of N generated profiles, then `erase --subjects` of ERASE of them, timed (PVBENCH: the pvbench that generates them)
set -euo pipefail
cd "$(dirname "$0")/.."
n=$1 k=$2; shift 2
PSQL=$(ls /usr/lib/postgresql/*/bin/psql | sort -V | tail -1)
work=$(mktemp -d /tmp/pv-pgerase.XXXXXX); chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
${PVBENCH:-.build/debug/pvbench} gen "$n" "$work/p.csv" >/dev/null
python3 - "$work/p.csv" "$k" "$work/ids.txt" <<'PY'
import csv,sys
rows=list(csv.reader(open(sys.argv[1])))[1:]
k=int(sys.argv[2]); step=max(1,len(rows)//k)
open(sys.argv[3],'w').write("\n".join(r[0] for r in rows[::step][:k])+"\n")
PY
base=${PROFILEVAULT_TEST_POSTGRES%%\?*}; q=${PROFILEVAULT_TEST_POSTGRES#*\?}
i=0
for P in "$@"; do
  i=$((i+1)); db=pverase$i; url="${base%/*}/$db?$q"
  "$PSQL" -X -q -d "$PROFILEVAULT_TEST_POSTGRES" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  "$P" keys generate --out "$work/k$i.json" >/dev/null
  export PROFILEVAULT_STORE=$url PROFILEVAULT_KEYS=$work/k$i.json PROFILEVAULT_POLICY=$PWD/policies
  "$P" init --service-role pverase_svc$i >/dev/null
  "$PSQL" -X -q -d "$url" -c "DROP ROLE IF EXISTS pverase_node$i" -c "CREATE ROLE pverase_node$i LOGIN PASSWORD 'node-pw'" -c "GRANT pverase_svc$i TO pverase_node$i"
  export PROFILEVAULT_STORE=$(printf '%s' "$url" | sed "s#//[^@]*@#//pverase_node$i@#")
  admin_pw=$PGPASSWORD; export PGPASSWORD=node-pw
  "$P" ingest profiles "$work/p.csv" --role operator >/dev/null
  t0=$(python3 -c 'import time; print(time.monotonic())')
  "$P" erase --subjects "$work/ids.txt" --reason bench --role privacy_officer >/dev/null
  t1=$(python3 -c 'import time; print(time.monotonic())')
  python3 -c "print('$P', $k, 'erased in', round($t1-$t0,2), 's', round($k/($t1-$t0)), 'subjects/s')"
  "$P" audit verify --role auditor >/dev/null && echo "  audit verify ok"
  export PGPASSWORD=$admin_pw
done
