#!/usr/bin/env bash
# `make test`: services up, dev requirements and the test browser installed, then the whole suite; its
# log (INFO and up) is then searched for any unmasked phone number, SMS code or secret.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
bash scripts/bootstrap.sh requirements-dev.txt
bash scripts/install_browser.sh || echo "[test] no Chromium: the browser test will fail and say why" >&2
mkdir -p test-artifacts
rc=0
.venv/bin/python -m pytest --log-file=test-artifacts/pytest.log --log-file-level=INFO "$@" || rc=$?
if [ "$rc" = 0 ]; then
  .venv/bin/python scripts/check_logs.py test-artifacts/pytest.log || rc=$?
fi
exit "$rc"
