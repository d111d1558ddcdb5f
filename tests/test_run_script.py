"""`make run` (scripts/run.sh) points the app at the sandbox's fake Slack."""

from __future__ import annotations

import subprocess

from sandbox.slack import DEFAULT_PORT
from tests.conftest import ROOT


def test_make_run_sends_slack_to_the_fake_slack_unless_the_environment_says_otherwise():
    script = (ROOT / "scripts" / "run.sh").read_text()
    exports = "\n".join(line for line in script.splitlines() if line.startswith("export SLACK_"))
    shown = "; ".join(["set -e", exports, 'echo "$SLACK_WEBHOOK_URL $SLACK_OPERATIONS_WEBHOOK_URL"'])
    out = subprocess.run(["bash", "-c", shown], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"}).stdout.split()
    assert out == [f"http://127.0.0.1:{DEFAULT_PORT}/alerts", f"http://127.0.0.1:{DEFAULT_PORT}/operations"]
    real = subprocess.run(["bash", "-c", shown], capture_output=True, text=True, check=True,
                          env={"PATH": "/usr/bin:/bin", "SLACK_WEBHOOK_URL": "https://hooks.slack.com/x"}).stdout
    assert real.split()[0] == "https://hooks.slack.com/x"
