"""Production settings pass `check --deploy` with no warnings, and refuse to start without their secrets."""

from __future__ import annotations

import os
import secrets
import string
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECK = ("import django; django.setup(); from django.core.management import call_command; "
         "call_command('check', '--deploy', '--fail-level', 'WARNING')")


def _production_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS",
                        "LOG_FORMAT"}}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        SECRET_KEY="".join(secrets.choice(string.ascii_letters + string.digits + "-_!@#") for _ in range(60)),
        ALLOWED_HOSTS="example.com",
        DATABASE_URL=os.environ.get("DATABASE_URL", "postgres://chipfarm:chipfarm@127.0.0.1:5432/chipfarm"),
    )
    env.update(overrides)
    return env


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


def test_check_deploy_reports_no_issues():
    result = _run(CHECK, _production_env())

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout + result.stderr


def test_production_needs_secret_key_and_allowed_hosts_from_the_environment():
    for missing in ("SECRET_KEY", "ALLOWED_HOSTS"):
        env = _production_env()
        del env[missing]
        result = _run("import django; django.setup()", env)
        assert result.returncode != 0
        assert f"Set the {missing} environment variable" in result.stderr


def test_production_logs_json_lines():
    code = ("import django; django.setup(); import logging; "
            "logging.getLogger('x').warning('sent to %s', '+5511987654321')")

    result = _run(code, _production_env())

    assert result.returncode == 0, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("{") and '"message": "sent to +55*******4321"' in line


def test_the_wsgi_process_loads_its_views_up_front_and_keeps_them_out_of_the_collector():
    """config.wsgi loads the URLconf (every view, the admin) before the first request, and freezes what the process
    holds then (gc.freeze): a full collection never walks the framework's long-lived objects in a request's time
    (bench/webhook_ingest.py: a lower p99)."""
    code = ("import gc, sys; import config.wsgi; "
            "print(gc.get_freeze_count() > 0, 'instances.views' in sys.modules, 'outbox.admin' in sys.modules)")

    result = _run(code, _production_env())

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "True"]
