#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/targets/ (swiftc -sanitize=fuzzer,address, the module
# sources compiled straight into each binary) and runs each for a bounded time.
#
# Usage: fuzz/run.sh [SECONDS] [TARGET...]      (default 60 s each, all targets; 0 = build only)
#   targets: csv json envelope keyring export policy where jsonl dp
# Seed corpora: fuzz/corpus/<target>/ (read only). New inputs found go to
# .build-rel/fuzz/work/<target>/ (gitignored). Crashes are saved under fuzz/crashes/<target>/.
# Prints one line per target: executions, new coverage, crashes. Exit 1 when any target crashed.
#
# The policy, where, jsonl and dp targets need Yams (they compile Sources/VaultPolicy): they link the
# Yams and CYaml objects of a SwiftPM build in .build-rel (run
# `swift build --scratch-path .build-rel --product profilectl` first); they are skipped with a
# note when those are missing.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(csv json envelope keyring export policy where jsonl dp)

out=$repo/.build-rel/fuzz
mkdir -p "$out/src"
flags=(-parse-as-library -sanitize=fuzzer,address -swift-version 6
       -enable-upcoming-feature ExistentialAny -enable-upcoming-feature InternalImportsByDefault
       -O -g -module-name FuzzTarget)

# VaultAudit's files import VaultCrypto; compiled into one module with it, that import goes.
audit_copy() {
  rm -rf "$out/src/VaultAudit"; mkdir -p "$out/src/VaultAudit"
  for f in Sources/VaultAudit/*.swift; do
    sed -e '/^public import VaultCrypto$/d' -e '/^import VaultCrypto$/d' "$f" >"$out/src/VaultAudit/$(basename "$f")"
  done
}

# Copies of module sources with their imports of other project modules removed: compiled into
# one module with those modules' sources, the imports would name modules that do not exist.
strip_copy() {  # strip_copy NAME FILE...  -> $out/src/NAME/
  local dir=$out/src/$1 f; shift
  rm -rf "$dir"; mkdir -p "$dir"
  for f in "$@"; do
    sed -E '/^(public |package |internal )?import (VaultCrypto|VaultPolicy|VaultAudit|VaultStore|DifferentialPrivacy|PrivateModels)$/d' "$f" >"$dir/$(basename "$f")"
  done
}

yams_objects() {
  local dir
  for dir in "$repo/.build-rel/x86_64-unknown-linux-gnu/debug" "$repo/.build-rel/debug"; do
    if [ -d "$dir/Yams.build" ] && [ -d "$dir/CYaml.build/src" ] && [ -d "$dir/Modules" ]; then
      echo "$dir"; return 0
    fi
  done
  return 1
}

build() {
  local t=$1 log=$out/$1.build.log
  case "$t" in
    csv) swiftc "${flags[@]}" fuzz/targets/csv.swift Sources/VaultStore/CSVReader.swift Sources/VaultStore/VaultError.swift -o "$out/csv" ;;
    json) swiftc "${flags[@]}" fuzz/targets/json.swift Sources/VaultAudit/JSONValue.swift Sources/VaultAudit/JSONParsing.swift -o "$out/json" ;;
    envelope) swiftc "${flags[@]}" -I Sources/COpenSSL fuzz/targets/envelope.swift Sources/VaultCrypto/*.swift -lcrypto -lssl -o "$out/envelope" ;;
    keyring) swiftc "${flags[@]}" -I Sources/COpenSSL fuzz/targets/keyring.swift Sources/VaultCrypto/*.swift -lcrypto -lssl -o "$out/keyring" ;;
    export) audit_copy && swiftc "${flags[@]}" -I Sources/COpenSSL fuzz/targets/export.swift "$out"/src/VaultAudit/*.swift Sources/VaultCrypto/*.swift -lcrypto -lssl -o "$out/export" ;;
    policy|where|jsonl|dp)
      local y; y=$(yams_objects) || { echo "no Yams build in .build-rel" >"$log"; return 3; }
      local yams=(-I "$y/Modules" -I "$repo/.build-rel/checkouts/Yams/Sources/CYaml/include" "$y"/Yams.build/*.o "$y"/CYaml.build/src/*.o)
      case "$t" in
        policy) swiftc "${flags[@]}" "${yams[@]}" fuzz/targets/policy.swift Sources/VaultPolicy/*.swift -o "$out/policy" ;;
        # WhereParser + WhereCondition (DifferentialPrivacy/Query.swift; its Epsilon is a shim) + VaultError.
        where) strip_copy where Sources/ProfileVault/WhereParser.swift Sources/DifferentialPrivacy/Query.swift &&
          swiftc "${flags[@]}" "${yams[@]}" fuzz/targets/where.swift fuzz/shims/where-epsilon.swift "$out"/src/where/*.swift \
            Sources/VaultPolicy/*.swift Sources/VaultStore/VaultError.swift -o "$out/where" ;;
        # RecordReader/LineReader with what they use from VaultStore, VaultAudit's JSON parser and VaultPolicy.
        jsonl) strip_copy jsonl Sources/VaultStore/RecordSources.swift Sources/VaultStore/Normalization.swift &&
          swiftc "${flags[@]}" "${yams[@]}" fuzz/targets/jsonl.swift "$out"/src/jsonl/*.swift Sources/VaultStore/CSVReader.swift \
            Sources/VaultStore/VaultError.swift Sources/VaultAudit/JSONValue.swift Sources/VaultAudit/JSONParsing.swift \
            Sources/VaultPolicy/*.swift -o "$out/jsonl" ;;
        # The DP planner and release path, the models, and the job-file part of Vault+Train.swift
        # (up to its "MARK: - Gate" line, closed with a brace; `Vault` is a shim) with what they use.
        dp) strip_copy dp Sources/DifferentialPrivacy/*.swift Sources/PrivateModels/*.swift &&
          awk '/MARK: - Gate/ { exit } { print }' Sources/ProfileVault/Vault+Train.swift >"$out/src/dp-jobfile.swift" &&
          echo "}" >>"$out/src/dp-jobfile.swift" && strip_copy dp-job "$out/src/dp-jobfile.swift" &&
          swiftc "${flags[@]}" "${yams[@]}" -I Sources/COpenSSL fuzz/targets/dp.swift fuzz/shims/dp-vault.swift "$out"/src/dp/*.swift \
            "$out"/src/dp-job/*.swift Sources/VaultCrypto/*.swift Sources/VaultPolicy/*.swift Sources/VaultStore/VaultError.swift \
            -lcrypto -lssl -o "$out/dp" ;;
      esac ;;
    *) echo "unknown target $t" >"$log"; return 2 ;;
  esac >"$log" 2>&1
}

status=0
printf '%-9s %10s %8s %8s %8s  %s\n' target execs exec/s corpus crashes note
for t in "${targets[@]}"; do
  build "$t"; rc=$?
  if [ $rc -ne 0 ]; then
    printf '%-9s %10s %8s %8s %8s  %s\n' "$t" - - - - "build failed or skipped: $(grep -m1 -E 'error|no Yams' "$out/$t.build.log")"
    [ $rc -eq 3 ] || status=1     # 3: skipped, no Yams build
    continue
  fi
  if [ "$seconds" = 0 ]; then
    printf '%-9s %10s %8s %8s %8s  %s\n' "$t" - - - - "built: $out/$t"
    continue
  fi
  seeds=fuzz/corpus/$t
  mkdir -p "$seeds" "$out/work/$t" "fuzz/crashes/$t"
  if [ "$t" = export ] && [ -z "$(ls -A "$seeds")" ]; then PV_FUZZ_MAKE_SEEDS=$seeds "$out/export" >/dev/null 2>&1; fi
  dict=()
  [ -f "fuzz/dict/$t.dict" ] && dict=(-dict="fuzz/dict/$t.dict")
  log=$out/$t.run.log
  before=$(ls "fuzz/crashes/$t" | wc -l)
  # -fork keeps going after a crash so one run can find several; each crash is written to
  # fuzz/crashes/<target>/ (crash-<sha1>, or timeout-/oom- for hangs and memory blowups).
  ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 \
  "$out/$t" -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
    -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
    -artifact_prefix="fuzz/crashes/$t/" "${dict[@]}" "$out/work/$t" "$seeds" >"$log" 2>&1
  after=$(ls "fuzz/crashes/$t" | wc -l)
  execs=$(grep -oE 'exec/s: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+')
  runs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
  corp=$(ls "$out/work/$t" | wc -l)
  new=$((after - before))
  [ "$new" -gt 0 ] && status=1
  printf '%-9s %10s %8s %8s %8s  %s\n' "$t" "${runs:-?}" "${execs:-?}" "$corp" "$new" "log: $log"
done
exit $status
