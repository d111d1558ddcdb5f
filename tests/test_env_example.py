"""Every variable .env.example lists is read, and every policy setting is used by the code it configures."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [p for pattern in ("**/*.py", "scripts/*.sh", "Makefile", "Dockerfile", "docker-compose.yml")
           for p in ROOT.glob(pattern)
           if not {".venv", "tests", "locale", "node_modules"} & set(p.relative_to(ROOT).parts)]
# Settings Django, Celery or the logging set-up consume by name (no `settings.X` in our code is expected).
FRAMEWORK = {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "REDIS_URL", "CELERY_BROKER_URL",
             "CELERY_RESULT_BACKEND", "CELERY_TASK_DEFAULT_QUEUE", "CELERY_TASK_SOFT_TIME_LIMIT",
             "CELERY_TASK_TIME_LIMIT", "CELERY_BROKER_CONNECTION_TIMEOUT",
             "LOG_LEVEL", "LOG_FORMAT", "RUN_MODE", "LANGUAGE_CODE", "CONN_MAX_AGE",
             "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS"}


def _env_names() -> list[str]:
    text = (ROOT / ".env.example").read_text()
    return re.findall(r"^([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE)


def _code() -> str:
    return "\n".join(p.read_text(errors="replace") for p in SOURCES)


def _is_read(name: str, code: str) -> bool:
    """Read by settings (env.int("NAME", ...)), os.environ / setdefault, or a shell script / compose file ($NAME)."""
    return bool(re.search(rf"""\(\s*["']{name}["']|\[["']{name}["']\]|\$\{{?{name}\b""", code))


def test_every_variable_in_env_example_is_read_somewhere():
    code = _code()
    assert [name for name in _env_names() if not _is_read(name, code)] == []


def test_every_setting_read_from_the_environment_is_used():
    base = (ROOT / "config" / "settings" / "base.py").read_text()
    names = re.findall(r"^([A-Z][A-Z0-9_]*) = env\.\w+\(", base, flags=re.MULTILINE)
    assert "BINDING_TTL_DAYS" in names
    code = _code()
    unused = [n for n in names if n not in FRAMEWORK and not re.search(rf"settings\.{n}\b", code)]
    assert unused == []
