#!/usr/bin/env bash
# bench/postgres.sh with the server's statement times (log_min_duration_statement = 20 ms),
# summarised per statement and role (the node's statements and the baseline's), the server's
# log kept as /tmp/pv-server-TAG.log:
#
#   PROFILECTL=... PVBENCH=... scripts/with-postgres.sh bench/pg-ingest-profile.sh TAG --profiles N --only ingest
set -euo pipefail
cd "$(dirname "$0")/.."
tag=$1; shift
PSQL=$(ls /usr/lib/postgresql/*/bin/psql | sort -V | tail -1)
"$PSQL" -X -q -d "$PROFILEVAULT_TEST_POSTGRES" -c "ALTER SYSTEM SET log_min_duration_statement = 20" -c "ALTER SYSTEM SET log_line_prefix = '%m [%p] %u '" -c "SELECT pg_reload_conf()" >/dev/null
datadir=$("$PSQL" -X -t -A -d "$PROFILEVAULT_TEST_POSTGRES" -c "SHOW data_directory")
bench/postgres.sh "$@"
cp "$datadir/../server.log" "/tmp/pv-server-$tag.log"
python3 - "/tmp/pv-server-$tag.log" <<'EOF'
import re, sys, collections
tot = collections.Counter(); cnt = collections.Counter()
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r"\] (\S+) LOG:  duration: ([0-9.]+) ms  (?:statement|execute [^:]*): (.*)", line)
    if not m: continue
    user, ms, sql = m.group(1), float(m.group(2)), m.group(3)
    key = user + " " + " ".join(sql.split()[:4])[:70]
    tot[key] += ms; cnt[key] += 1
for k, v in tot.most_common(15): print(f"{v/1000:8.2f} s {cnt[k]:5d}x  {k}")
EOF
