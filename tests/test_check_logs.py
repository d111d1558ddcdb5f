"""scripts/check_logs.py catches each kind of leak, and records are masked wherever they are handled."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("line", [
    "sending to +5511988887777", "jid 5511988887777@s.whatsapp.net", "Seu código: 123-456",
    "secret whsec_abcdefghijkl", "key cf_abcdefghijklmnopqrstuvwxyz",
])
def test_check_logs_fails_on_a_leak(tmp_path, line):
    log = tmp_path / "t.log"
    log.write_text(f"2026-11-24 INFO x {line}\n")
    result = subprocess.run([sys.executable, ROOT / "scripts/check_logs.py", log], capture_output=True, text=True)
    assert result.returncode == 1, result.stdout


def test_check_logs_passes_masked_lines(tmp_path):
    log = tmp_path / "t.log"
    log.write_text("sending to +55*******7777, code ******, whsec_***, cf_***\n")
    result = subprocess.run([sys.executable, ROOT / "scripts/check_logs.py", log], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_records_are_masked_for_any_handler():
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    logger = logging.getLogger("chipfarm.test.masking")
    handler = Collect()
    logger.addHandler(handler)
    try:
        logger.warning("contact %s got code %s", "+5511988887777", "código 246802")
    finally:
        logger.removeHandler(handler)
    assert seen and "988887777" not in seen[0] and "246802" not in seen[0]
