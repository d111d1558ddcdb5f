#!/usr/bin/env bash
# Create .venv and install the pinned requirements (idempotent, quick when nothing changed).
set -euo pipefail
cd "$(dirname "$0")/.."
REQS=${1:-requirements.txt}
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PY=$candidate; break; fi
  done
fi
[ -n "$PY" ] || { echo "Python 3.11 is required (python3.11 not found)." >&2; exit 1; }
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else 1)' \
  || { echo "Python >= 3.11 is required; $PY is $("$PY" --version)." >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  echo "[bootstrap] creating .venv with $PY"
  "$PY" -m venv .venv || { echo "Cannot create a venv: install python3-venv (apt-get install python3-venv)." >&2; exit 1; }
fi
stamp=".venv/.installed-$(cat requirements*.txt | sha256sum | cut -c1-16)-$(basename "$REQS")"
if [ ! -f "$stamp" ]; then
  echo "[bootstrap] installing $REQS"
  # (grep drops this machine's pip notices about missing local mirrors; real errors still show)
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$REQS" 2>&1 | { grep -v "is ignored: it is neither" || true; }
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "pip install failed" >&2; exit 1; }
  touch "$stamp"
fi
