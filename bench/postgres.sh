#!/usr/bin/env bash
# PostgreSQL figures (issue 18, part 5), each beside its baseline measured in the same run:
#
#   scripts/with-postgres.sh bench/postgres.sh [--profiles N] [--seconds S] [--only LIST]
#
# (defaults: 1,000,000 profiles; 10 s per load run; every figure). Release build, or the
# binaries named by PROFILECTL and PVBENCH (both set: nothing is built; to compare two builds
# in one sitting). --only takes a comma-separated subset of ingest,dp,gets,http,append (dp,
# gets and http need the profiles, so they are always ingested). Prints one JSON object per
# figure; writes nothing into the repository.
#
#  1. ingest: `profilectl ingest profiles` of N profiles into the PostgreSQL store (sealing,
#     pseudonyms, blind indexes, audit entry) against a plain `COPY` of the same rows into twins
#     of the store's tables (subjects, pii, attributes: same columns, constraints and indexes)
#     with plaintext in place of the crypto (copy_seconds: the goal's baseline); and, for
#     continuity, against a `COPY` of the CSV into one table of its columns with a unique index
#     and two lookup indexes (single_table_copy_seconds); peak RSS; the node's CPU (user and
#     system seconds) and the server's CPU over the ingest and over the twin COPY
#     (server_cpu_seconds, copy_server_cpu_seconds: the postmaster and all its processes).
#  2. DP aggregates: `profilectl query count|sum|mean --group-by` over the N subjects (consent
#     filter, bounded sums on the server, noise in the process) against the same aggregate as
#     one raw SQL statement through psql, on the same database.
#  3. audited GETs: `pvbench gets`, in process and one at a time (the issue's p99 < 5 ms, measured
#     as the SQLite figure is); over HTTP one at a time (latency), then throughput
#     with 1 and 2 `serve` nodes (a Python keep-alive load generator, 16 connections in all).
#  4. the audit head's ceiling: one-entry audit appends per second (`pvbench append`, each in
#     its own transaction as an audited read's) from 1 and from 8 threads at once; every
#     append takes the chain's head row, which serialises them across all nodes.
set -euo pipefail
cd "$(dirname "$0")/.."
n=1000000 secs=10 only=ingest,dp,gets,http,append
while [ $# -gt 0 ]; do
  case "$1" in
    --profiles) n=$2; shift 2 ;;
    --seconds) secs=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    *) echo "usage: scripts/with-postgres.sh $0 [--profiles N] [--seconds S] [--only ingest,dp,gets,http,append]" >&2; exit 64 ;;
  esac
done
wants() { case ",$only," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
[ -n "${PROFILEVAULT_TEST_POSTGRES:-}" ] || { echo "run it through scripts/with-postgres.sh" >&2; exit 64; }
if [ -n "${PROFILECTL:-}" ] && [ -n "${PVBENCH:-}" ]; then
  P=$(realpath "$PROFILECTL") G=$(realpath "$PVBENCH")
else
  swift build -c release --product profilectl >/dev/null
  swift build -c release --product pvbench >/dev/null
  P=$PWD/.build/release/profilectl G=$PWD/.build/release/pvbench
fi
PSQL=$(ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | sort -V | tail -1); [ -n "$PSQL" ] || PSQL=psql
work=$(mktemp -d /tmp/pv-pgbench.XXXXXX)
chmod 755 "$work"
servers=()
cleanup() { for s in "${servers[@]}"; do kill "$s" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
base=${PROFILEVAULT_TEST_POSTGRES%%\?*}; q=${PROFILEVAULT_TEST_POSTGRES#*\?}
url="${base%/*}/pvbench?$q"
"$PSQL" -X -q -d "$PROFILEVAULT_TEST_POSTGRES" -c "DROP DATABASE IF EXISTS pvbench" -c "CREATE DATABASE pvbench"
export PROFILEVAULT_STORE=$url PROFILEVAULT_KEYS=$work/k.json PROFILEVAULT_POLICY=$PWD/policies
"$P" keys generate --out "$work/k.json" >/dev/null
admin_pw=$PGPASSWORD
"$P" init --service-role pvbench_svc >/dev/null
# Every later command runs as a node does: a login role that is only a member of the service role.
node_pw=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
"$PSQL" -X -q -d "$url" -c "DROP ROLE IF EXISTS pvbench_node" -c "CREATE ROLE pvbench_node LOGIN PASSWORD '$node_pw'" -c "GRANT pvbench_svc TO pvbench_node"
admin_url=$url
url=$(printf '%s' "$url" | sed 's#//[^@]*@#//pvbench_node@#')
export PROFILEVAULT_STORE=$url PGPASSWORD=$node_pw
"$G" gen "$n" "$work/p.csv" >/dev/null
sql() { PGPASSWORD=$admin_pw "$PSQL" -X -q -t -A -d "$admin_url" -c "$1"; }
now() { python3 -c 'import time; print(time.monotonic())'; }

# The server's CPU seconds so far: the postmaster's own and those of its children, live or
# exited (an exited backend's time is in the postmaster's cutime/cstime once reaped).
pm=$(head -1 "$(sql "SHOW data_directory")/postmaster.pid")
servercpu() { sleep 0.5; python3 - "$pm" <<'EOF'
import os, sys
pm = sys.argv[1]
def fields(p):
    with open(f"/proc/{p}/stat") as f:
        s = f.read()
    return s[s.rindex(")") + 2:].split()
f = fields(pm)
total = sum(int(x) for x in f[11:15])   # utime, stime, cutime, cstime
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            g = fields(p)
        except OSError:
            continue
        if g[1] == pm:
            total += int(g[11]) + int(g[12])
print(total / os.sysconf("SC_CLK_TCK"))
EOF
}

# 1. Ingest against plain COPY.
c0=$(servercpu)
t0=$(now)
/usr/bin/time -f "%M %U %S" -o "$work/rss" "$P" ingest profiles "$work/p.csv" --role operator >/dev/null
t1=$(now)
c1=$(servercpu)
# The goal's baseline: the same rows into the same tables without crypto. Twin tables of the
# store's own (`LIKE ... INCLUDING ALL`: the same columns, types, CHECK and NOT NULL
# constraints, primary keys, unique and partial indexes, identity), in schema bench_twin of the
# same database on the same server; plaintext where the store writes crypto (bench/twin-rows.py
# says what goes where). The per-table files are prepared first (binary COPY format, written by
# the server from the CSV loaded into a staging table); only the three COPY statements are
# timed (psql's \timing; psql reads the files and streams them, as the node streams its rows).
sql "CREATE SCHEMA bench_twin"
for t in subjects pii attributes; do sql "CREATE TABLE bench_twin.$t (LIKE profilevault.$t INCLUDING ALL)"; done
# The twins have no triggers and no foreign keys; the store's tables must have none that a
# profile's INSERT fires either, or the baseline would skip work the store does.
tables="'profilevault.subjects'::regclass, 'profilevault.pii'::regclass, 'profilevault.attributes'::regclass"
extra=$(sql "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND (tgtype & 4) <> 0 AND tgrelid IN ($tables)")
fks=$(sql "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid IN ($tables)")
[ "$extra" = 0 ] && [ "$fks" = 0 ] || { echo "the store's tables have INSERT triggers ($extra) or foreign keys ($fks) the twins lack" >&2; exit 1; }
PSQL=$PSQL ADMIN_URL=$admin_url PGPASSWORD=$admin_pw python3 bench/twin-rows.py "$work/p.csv" "$work" "$(sql "SELECT max(kek_version) FROM profilevault.subjects")" > "$work/twin.sql"
PGPASSWORD=$admin_pw "$PSQL" -X -q -v ON_ERROR_STOP=1 -d "$admin_url" -f "$work/twin.sql"
sql "CHECKPOINT"
c2=$(servercpu)
PGPASSWORD=$admin_pw "$PSQL" -X -q -v ON_ERROR_STOP=1 -d "$admin_url" -c '\timing on' \
  -c "\\copy bench_twin.subjects($(cat "$work/twin-subjects.cols")) FROM '$work/twin-subjects.bin' WITH (FORMAT binary)" \
  -c "\\copy bench_twin.pii($(cat "$work/twin-pii.cols")) FROM '$work/twin-pii.bin' WITH (FORMAT binary)" \
  -c "\\copy bench_twin.attributes($(cat "$work/twin-attributes.cols")) FROM '$work/twin-attributes.bin' WITH (FORMAT binary)" > "$work/twin.timing"
c3=$(servercpu)
[ "$(grep -c '^Time:' "$work/twin.timing")" = 3 ] || { echo "psql did not time the three COPY statements" >&2; cat "$work/twin.timing" >&2; exit 1; }
twin=$(awk '/^Time:/ { s += $2 } END { printf "%.3f", s / 1000 }' "$work/twin.timing")
for t in subjects pii attributes; do
  [ "$(sql "SELECT count(*) FROM bench_twin.$t")" = "$(sql "SELECT count(*) FROM profilevault.$t")" ] || { echo "bench_twin.$t holds another row count than profilevault.$t" >&2; exit 1; }
done
# The earlier baseline (continuity): the CSV as it is into one table of its own columns.
sql "CREATE TABLE bench_plain(customer_id text PRIMARY KEY, email text, full_name text, phone text, birth_date text,
     age bigint, gender text, country text, annual_income double precision)"
sql "CREATE INDEX bench_plain_email ON bench_plain(email) WHERE email IS NOT NULL"
sql "CREATE INDEX bench_plain_phone ON bench_plain(phone) WHERE phone IS NOT NULL"
t2=$(now)
PGPASSWORD=$admin_pw "$PSQL" -X -q -d "$admin_url" -c "\\copy bench_plain FROM '$work/p.csv' WITH (FORMAT csv, HEADER true)"
t3=$(now)
wants ingest && python3 - "$n" "$t0" "$t1" "$t2" "$t3" $(tail -1 "$work/rss") "$twin" "$c0" "$c1" "$c2" "$c3" <<'EOF'
import json, sys
n, t0, t1, t2, t3, rss, user, system, twin = int(sys.argv[1]), *map(float, sys.argv[2:6]), int(sys.argv[6]), *map(float, sys.argv[7:10])
c0, c1, c2, c3 = map(float, sys.argv[10:14])
vault, plain = t1 - t0, t3 - t2
print(json.dumps({"figure": "postgres.ingest", "profiles": n, "vault_seconds": round(vault, 2),
                  "copy_seconds": round(twin, 2), "ratio_copy_over_vault": round(twin / vault, 3),
                  "single_table_copy_seconds": round(plain, 2), "ratio_single_table_copy_over_vault": round(plain / vault, 3),
                  "peak_rss_mb": round(rss / 1024, 1), "node_cpu_user_seconds": user, "node_cpu_system_seconds": system,
                  "server_cpu_seconds": round(c1 - c0, 2), "copy_server_cpu_seconds": round(c3 - c2, 2)}))
EOF

# 2. DP aggregates against raw SQL.
cut -d, -f1 "$work/p.csv" | tail -n +2 > "$work/ids.txt"
wants dp && "$P" consent grant --purpose analytics --subjects "$work/ids.txt" --role privacy_officer >/dev/null
wants dp && for spec in "count|SELECT count(*) FROM profilevault.subjects s JOIN profilevault.consent_state c ON c.subject_id = s.id AND c.purpose = 'analytics' AND c.granted" \
            "sum --attribute annual_income|SELECT sum(least(greatest(a.annual_income, 0), 250000)) FROM profilevault.attributes a JOIN profilevault.consent_state c ON c.subject_id = a.subject_id AND c.purpose = 'analytics' AND c.granted" \
            "mean --attribute age --group-by country|SELECT a.country, avg(least(greatest(a.age, 18), 100)) FROM profilevault.attributes a JOIN profilevault.consent_state c ON c.subject_id = a.subject_id AND c.purpose = 'analytics' AND c.granted GROUP BY a.country"; do
  kind=${spec%%|*}; raw=${spec#*|}
  t0=$(now); "$P" query $kind --purpose analytics --epsilon 0.01 --fresh --role trainer >/dev/null; t1=$(now)
  t2=$(now); sql "$raw" >/dev/null; t3=$(now)
  python3 -c "import json; v=$t1-$t0; r=$t3-$t2; print(json.dumps({'figure':'postgres.dp','query':'$kind','dp_seconds':round(v,3),'raw_sql_seconds':round(r,3),'ratio':round(v/r,2)}))"
done

# 3. Audited GETs: in process, one at a time (as the SQLite figure), then over HTTP.
wants gets && "$G" gets "$url" "$PWD/policies" "$work/k.json" "$work/ids.txt" 2000
if wants http; then
token=$("$P" tokens add --tokens "$work/tokens.json" --actor load --role support --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
ports=()
for i in 1 2; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$P" serve --listen "127.0.0.1:$port" --tokens "$work/tokens.json" 2>"$work/node$i.log" & servers+=($!)
  ports+=("$port")
done
for p in "${ports[@]}"; do for _ in $(seq 100); do curl -sf "http://127.0.0.1:$p/healthz" >/dev/null 2>&1 && break; sleep 0.2; done; done
for run in "1 1" "1 16" "2 16"; do
  set -- $run
  python3 - "$secs" "$token" "$work/ids.txt" "$1" "$2" "${ports[@]}" <<'EOF'
import http.client, json, random, sys, threading, time
secs, token, ids_file, nodes, conns, ports = float(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6:]
ids = open(ids_file).read().split()[:100000]
lat, lock, stop = [], threading.Lock(), time.monotonic() + secs
def worker(port):
    c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
    mine = []
    while time.monotonic() < stop:
        t = time.monotonic()
        c.request("GET", f"/v1/subjects/{random.choice(ids)}?purpose=customer_support", headers={"Authorization": f"Bearer {token}"})
        r = c.getresponse(); r.read()
        if r.status == 200: mine.append(time.monotonic() - t)
    with lock: lat.extend(mine)
threads = [threading.Thread(target=worker, args=(ports[i % nodes],)) for i in range(conns)]
[t.start() for t in threads]; [t.join() for t in threads]
lat.sort()
print(json.dumps({"figure": "postgres.get", "nodes": nodes, "connections": conns, "requests_per_second": round(len(lat) / secs, 1),
                  "p50_ms": round(lat[len(lat) // 2] * 1000, 2) if lat else None, "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 2) if lat else None}))
EOF
done
fi
wants append && for threads in 1 8; do
  "$G" append "$url" "$PWD/policies" "$work/k.json" "$secs" "$threads"
done
entries=$(sql "SELECT seq FROM profilevault.audit_head")
echo "{\"figure\": \"postgres.audit\", \"entries\": $entries}"
