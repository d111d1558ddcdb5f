"""scripts/entrypoint.sh: an unknown or missing RUN_MODE stops with a clear error and exit code 2."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "entrypoint.sh"


def _run(mode: str | None, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RUN_MODE"}
    if mode is not None:
        env["RUN_MODE"] = mode
    return subprocess.run(["sh", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=20)


@pytest.mark.parametrize("mode", ["bogus", "API", ""])
def test_an_unknown_or_empty_mode_exits_2_with_a_clear_message(mode):
    result = _run(mode)

    assert result.returncode == 2
    assert "RUN_MODE" in result.stderr and "api, worker, scheduler or migrate" in result.stderr


def test_the_script_is_executable_and_valid_sh():
    assert os.access(SCRIPT, os.X_OK)
    assert subprocess.run(["sh", "-n", str(SCRIPT)]).returncode == 0


def test_other_commands_run_as_given():
    result = _run(None, "echo", "hello")

    assert (result.returncode, result.stdout) == (0, "hello\n")
