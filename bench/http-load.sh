#!/usr/bin/env bash
# Load test of the HTTP service on loopback (issue 7): GET subject and POST query (DP count)
# from 16 concurrent connections with wrk, reporting req/s and p50/p99 latency.
#
#   bench/http-load.sh [--subjects N] [--seconds S] [--only get|query] [--perf FILE]
#   (defaults: 100,000 subjects, 10 s each; --perf records the server with perf during the
#   GET run, for `perf report -i FILE`)
#
# Needs wrk (apt-get install -y wrk). Builds profilectl and pvbench in release.
set -euo pipefail
cd "$(dirname "$0")/.."
n=100000 secs=10 only="" perfout=""
while [ $# -gt 0 ]; do
  case "$1" in
    --subjects) n=$2; shift 2 ;;
    --seconds) secs=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --perf) perfout=$2; shift 2 ;;
    *) echo "usage: $0 [--subjects N] [--seconds S] [--only get|query] [--perf FILE]" >&2; exit 64 ;;
  esac
done
command -v wrk >/dev/null || { echo "error: wrk is needed: apt-get install -y wrk" >&2; exit 1; }
swift build -c release --product profilectl >/dev/null
swift build -c release --product pvbench >/dev/null
P=$PWD/.build/release/profilectl G=$PWD/.build/release/pvbench
work=$(mktemp -d /tmp/pv-http.XXXXXX)
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
export PROFILEVAULT_STORE=$work/s.sqlite PROFILEVAULT_KEYS=$work/k.json PROFILEVAULT_POLICY=$PWD/policies
"$P" keys generate --out "$work/k.json" >/dev/null
"$P" init >/dev/null
"$G" gen "$n" "$work/p.csv" >/dev/null
"$P" ingest profiles "$work/p.csv" >/dev/null
cut -d, -f1 "$work/p.csv" | tail -n +2 > "$work/ids.txt"
"$P" consent grant --purpose model_training --subjects "$work/ids.txt" --role privacy_officer >/dev/null
support=$("$P" tokens add --tokens "$work/tokens.json" --actor load --role support --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
trainer=$("$P" tokens add --tokens "$work/tokens.json" --actor load --role trainer --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$P" serve --listen "127.0.0.1:$port" --tokens "$work/tokens.json" 2>"$work/server.log" &
server=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.2; done

# GET subject: a random existing customer per request.
cat > "$work/get.lua" <<LUA
math.randomseed(7)
request = function()
  local id = string.format("C-%07d", math.random(0, $n - 1))
  return wrk.format("GET", "/v1/subjects/" .. id .. "?purpose=customer_support", {["Authorization"] = "Bearer $support"})
end
LUA
# POST query: a DP count over all subjects (a tiny epsilon, so the budget lasts the run).
cat > "$work/query.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"kind":"count","purpose":"model_training","epsilon":0.00001,"where":"country=DE","fresh":true}'
wrk.headers["Authorization"] = "Bearer $trainer"
wrk.headers["Content-Type"] = "application/json"
LUA
report() { # name, wrk output
  python3 - "$1" "$2" <<'PY'
import re, sys
name, text = sys.argv[1], open(sys.argv[2]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
def ms(q):
    m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)" % q, text, re.M)
    v, u = float(m.group(1)), m.group(2)
    return v / 1000 if u == "us" else v * 1000 if u == "s" else v
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(f"{name}: {rps:,.0f} req/s, p50 {ms(50):.2f} ms, p99 {ms(99):.2f} ms" + (f", {errors.group(1)} non-2xx" if errors else ""))
PY
}
if [ "$only" != query ]; then
  perfpid=""
  if [ -n "$perfout" ]; then perf record -F 499 -g -p "$server" -o "$perfout" -- sleep "$secs" 2>/dev/null & perfpid=$!; fi
  cpu0=$(awk '{print $14 + $15}' /proc/$server/stat)
  wrk -t 2 -c 16 -d "${secs}s" --latency -s "$work/get.lua" "http://127.0.0.1:$port" > "$work/get.txt"
  cpu1=$(awk '{print $14 + $15}' /proc/$server/stat)
  [ -n "$perfpid" ] && wait "$perfpid"
  report "GET /v1/subjects/{id} ($n subjects, 16 connections)" "$work/get.txt"
  python3 -c "import re,sys; t=open('$work/get.txt').read(); n=int(re.search(r'(\d+) requests in', t).group(1)); print(f'  server CPU {($cpu1 - $cpu0) * 10 / n * 1000:.0f} us per GET ({($cpu1 - $cpu0) / 100:.1f} s over {n} requests)')"
fi
if [ "$only" != get ]; then
  wrk -t 2 -c 16 -d "${secs}s" --latency -s "$work/query.lua" "http://127.0.0.1:$port/v1/queries" > "$work/query.txt"
  report "POST /v1/queries count --where ($n subjects, 16 connections)" "$work/query.txt"
fi
