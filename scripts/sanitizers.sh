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
  # The CLI tests start the built profilectl; it is instrumented too.
  swift test --sanitize="$k" --scratch-path ".build-$k" 2>&1 | tail -n 20
done
