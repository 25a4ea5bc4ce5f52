#!/usr/bin/env bash
# Runs the test suite under AddressSanitizer and ThreadSanitizer, each in its own build folder.
#   scripts/sanitizers.sh [address|thread ...]     (default: both)
# A clean build per sanitizer takes several minutes on 2 cores, so CI does not run this.
set -euo pipefail
cd "$(dirname "$0")/.."
kinds=("$@")
[ ${#kinds[@]} -eq 0 ] && kinds=(address thread)
for k in "${kinds[@]}"; do
  echo "== $k sanitizer" >&2
  # The CLI tests start the built profilectl; it is instrumented too. LeakSanitizer is off for
  # the pass/fail run: small allocations still live at exit (48 bytes from argument parsing,
  # 4 KiB from libyaml on an empty-file error path) make it turn exit statuses into 1, which the
  # exit-status tests then report. Run with ASAN_OPTIONS=detect_leaks=1 to list them.
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0} SWIFT_BACKTRACE=enable=no \
    swift test --sanitize="$k" --scratch-path ".build-$k" 2>&1 | tail -n 20
done
