#!/usr/bin/env bash
# The Python model reader against `profilectl score` (issue 24): trains linear and logistic
# regression, random forest and k-means on a fresh store with profilectl, scores them inside the
# vault, and checks python/profilevault_models gives the same numbers on the same rows (1e-9).
# Makes a virtual environment (.venv-models, reused) with the pinned numpy of
# python/requirements-test.txt and the reader; scikit-learn (python/requirements-sklearn.txt)
# when it installs, to check to_sklearn() too.
#
#   PROFILECTL=.build/debug/profilectl scripts/models-python-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${MODELS_VENV:-.venv-models}"
if [ ! -x "$venv/bin/python3" ]; then
  python3 -m venv "$venv"
fi
if ! cmp -s python/requirements-test.txt "$venv/.requirements" 2>/dev/null; then
  "$venv/bin/pip" install -q --disable-pip-version-check -r python/requirements-test.txt
  cp python/requirements-test.txt "$venv/.requirements"
fi
if ! "$venv/bin/python3" -c "import sklearn" 2>/dev/null; then
  "$venv/bin/pip" install -q --disable-pip-version-check -r python/requirements-sklearn.txt \
    || echo "models-python-test: scikit-learn did not install; to_sklearn() is not checked" >&2
fi
"$venv/bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall ./python
export PROFILECTL="${PROFILECTL:-.build/debug/profilectl}"
exec "$venv/bin/python3" scripts/models-python-test.py "$@"
