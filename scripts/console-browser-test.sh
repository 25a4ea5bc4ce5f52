#!/usr/bin/env bash
# The console browser test (issue 21): headless Chromium (Debian's chromium and chromium-driver)
# driven by Selenium, with axe-core for accessibility. Makes a virtual environment with the
# pinned packages of scripts/console-browser-requirements.txt (in .venv-console, reused when it
# already has them), then runs scripts/console-browser-test.py with its python.
#
#   PROFILECTL=.build/debug/profilectl scripts/console-browser-test.sh [--screenshots docs/img/console] [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${CONSOLE_VENV:-.venv-console}"
req=scripts/console-browser-requirements.txt
if [ ! -x "$venv/bin/python3" ]; then
  python3 -m venv "$venv"
fi
if ! cmp -s "$req" "$venv/.requirements" 2>/dev/null; then
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
  cp "$req" "$venv/.requirements"
fi
export PROFILECTL="${PROFILECTL:-.build/debug/profilectl}"
exec "$venv/bin/python3" scripts/console-browser-test.py "$@"
