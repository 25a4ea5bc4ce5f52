#!/usr/bin/env bash
# The API contract test (issue 20, part 1): docs/openapi.yaml validates, and the live service
# answers as it says for a token of every role (schemathesis). Makes a virtual environment
# with the pinned packages of scripts/api-contract-requirements.txt (in .venv-contract, reused
# when it already has them), then runs scripts/api-contract-test.py with its python.
#
#   PROFILECTL=.build/debug/profilectl scripts/api-contract-test.sh [--max-examples N] [--seed N] [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${CONTRACT_VENV:-.venv-contract}"
req=scripts/api-contract-requirements.txt
if [ ! -x "$venv/bin/python3" ]; then
  python3 -m venv "$venv"
fi
if ! cmp -s "$req" "$venv/.requirements" 2>/dev/null; then
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
  cp "$req" "$venv/.requirements"
fi
export PROFILECTL="${PROFILECTL:-.build/debug/profilectl}"
exec "$venv/bin/python3" scripts/api-contract-test.py "$@"
