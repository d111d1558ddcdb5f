"""Settings for every environment, all read from the environment (django-environ).

`test.py` and `production.py` are thin overrides. A bad value raises ImproperlyConfigured at start-up,
never at the first request.
"""

import importlib.util
from datetime import time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import environ
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from config.logging import install_record_masking

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default="dev-only-insecure-secret-key-change-me-0123456789")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "django_fsm",
    "axes",
    "outbox",
    "chips",
    "instances",
    "activation",
    "warmer",
    "chipfarm",
]
# The fake providers are an app of their own, installed only where their requirements are (the demo, the
# tests, the compose stack's sandbox service): production images without starlette do not carry it.
if importlib.util.find_spec("starlette") is not None:
    INSTALLED_APPS.append("sandbox")

MIDDLEWARE = [
    "config.middleware.RequestIdMiddleware",
    "config.middleware.MachineBodyLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "config.middleware.SessionMiddleware",
    "config.middleware.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "config.middleware.AuthenticationMiddleware",
    "config.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: it turns a login it flagged as locked out into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db_url("DATABASE_URL", default="postgres://chipfarm:chipfarm@127.0.0.1:5432/chipfarm"),
}
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured("DATABASE_URL must point at PostgreSQL (advisory locks, SKIP LOCKED).")
# Django's backend, with its health check asking the kernel first (common.postgresql: no `SELECT 1` round trip
# per request on a connection the server has not closed).
DATABASES["default"]["ENGINE"] = "common.postgresql"
# Short-lived connections are re-opened after a PostgreSQL restart; health checks drop dead ones.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# The hot paths' statements (a route decision, a reservation: common.statements) are prepared on the server, so
# PostgreSQL plans each once per connection. Off behind a pooler in transaction mode that does not track prepared
# statements (PgBouncer before 1.21).
DATABASE_PREPARED_STATEMENTS = env.bool("DATABASE_PREPARED_STATEMENTS", default=True)
if DATABASE_PREPARED_STATEMENTS:
    # ...once: as a generic plan from the first run, not after five custom plans each planned afresh (PostgreSQL's
    # default; a route decision's statement takes longer to plan than to run). Only prepared statements are
    # planned this way: the rest of the ORM binds on the client. Set when connecting (a SET could roll back).
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    _options["options"] = f"{_options.get('options', '')} -c plan_cache_mode=force_generic_plan".strip()
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "chipfarm",
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    }
}

# django-axes refuses a locked-out (username, address) before the password is even checked; ModelBackend logs in.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

# --- Login throttling (django-axes): 5 failures for one username from one address lock that pair 15 minutes ---
AXES_VERBOSE = False  # no banner line on every command
AXES_FAILURE_LIMIT = 5
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# Attempts in PostgreSQL: shared by every replica, listed in the admin (Axes > Access attempts), cleared by
# the Unlock action there (or `manage.py axes_reset_username NAME`).
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
# A successful login below the limit forgets the earlier failures of that pair.
AXES_RESET_ON_SUCCESS = True
# Tries while locked out are refused without being counted: the lock ends 15 minutes after the failure that set
# it, however often someone keeps trying.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# REMOTE_ADDR only (django-ipware is not installed): X-Forwarded-For is written by the client, and trusting it
# would let a guesser pick a fresh "address" for every try.
AXES_IPWARE_META_PRECEDENCE_ORDER = ("REMOTE_ADDR",)
# The lockout answer: an admin-styled page (status 429) instead of axes' plain-text body.
AXES_LOCKOUT_CALLABLE = "config.security.lockout_response"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Operators are Brazilian: the admin speaks pt-BR by default, English on request.
LANGUAGE_CODE = env.str("LANGUAGE_CODE", default="pt-br")
LANGUAGES = [("pt-br", _("Brazilian Portuguese")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
USE_TZ = True
# Stored in UTC (USE_TZ); shown to operators on São Paulo wall-clock time. Business hours are computed with
# BUSINESS_TIMEZONE (instances.hours) and Celery keeps UTC (CELERY_TIMEZONE below), so nothing depends on this.
TIME_ZONE = "America/Sao_Paulo"

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# --- Celery (STYLE: UTC, prefetch 1, late acks only on idempotent tasks, database beat scheduler) ---
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=REDIS_URL)
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_TASK_ACKS_LATE = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="chipfarm")
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 3600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A publish never holds a request: one short try (a dead or unreachable Redis fails within about a second) and
# no retries — what could not be queued is a committed due-at row that its sweep queues again (STYLE).
CELERY_BROKER_CONNECTION_TIMEOUT = env.float("CELERY_BROKER_CONNECTION_TIMEOUT", default=1.0)
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 0, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
# A task that waits on the network must not hold a worker forever.
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=60)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=90)
# Redis redelivers an unacked message after this; no countdown may come near it (STYLE).
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}

# --- Outside systems (DESIGN §10) ---
# The WhatsApp gateway implementation (instances.gateway): Evolution 2.3.7 today.
# Message events from the gateway are stored by the webhook and applied by a drain task per shard of instances
# (instances.inbox): shards drain side by side, one instance's events always in order. About one per worker.
GATEWAY_EVENT_SHARDS = env.int("GATEWAY_EVENT_SHARDS", default=2)
# A kick asks for the drain this long after the first event that found no drain asked for: the events of that
# moment are applied together, in one batch (a drain per event would spend more on the task than on the events).
GATEWAY_EVENT_DRAIN_DELAY_SECONDS = env.float("GATEWAY_EVENT_DRAIN_DELAY_SECONDS", default=0.25)
# The webhook remembers instance name → id this long (per process).
GATEWAY_INSTANCE_CACHE_SECONDS = env.int("GATEWAY_INSTANCE_CACHE_SECONDS", default=60)
GATEWAY_BACKEND = env.str("GATEWAY_BACKEND", default="instances.gateway.evolution.EvolutionGateway")
EVOLUTION_API_URL = env.str("EVOLUTION_API_URL", default="http://127.0.0.1:8081")
EVOLUTION_API_KEY = env.str("EVOLUTION_API_KEY", default="dev-evolution-key")
EVOLUTION_WEBHOOK_SECRET = env.str("EVOLUTION_WEBHOOK_SECRET", default="dev-evolution-webhook-secret")
# Sessions one gateway server takes by default (each server's capacity is set in the admin).
GATEWAY_SERVER_CAPACITY = env.int("GATEWAY_SERVER_CAPACITY", default=300)
# Where other machines reach this pool (the links it serves, e.g. the activation link handed to the activator).
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000")
EVOLUTION_WEBHOOK_URL = env.str("EVOLUTION_WEBHOOK_URL", default="http://127.0.0.1:8000/webhooks/evolution")
SALVY_API_URL = env.str("SALVY_API_URL", default="http://127.0.0.1:8082")
SALVY_API_TOKEN = env.str("SALVY_API_TOKEN", default="dev-salvy-token")
SALVY_WEBHOOK_SECRET = env.str("SALVY_WEBHOOK_SECRET", default="whsec_ZGV2LXNhbHZ5LXdlYmhvb2stc2VjcmV0")
CHIP_ACTIVATOR_URL = env.str("CHIP_ACTIVATOR_URL", default="http://127.0.0.1:8083")
CHIP_ACTIVATOR_API_KEY = env.str("CHIP_ACTIVATOR_API_KEY", default="dev-activator-key")
SLACK_WEBHOOK_URL = env.str("SLACK_WEBHOOK_URL", default="")
# The "operations" channel; empty: the alerts webhook carries both.
SLACK_OPERATIONS_WEBHOOK_URL = env.str("SLACK_OPERATIONS_WEBHOOK_URL", default="")
# The Slack app's signing secret (Basic Information → App Credentials): signs the slash command that posts to
# /webhooks/slack/commands. Empty: that endpoint answers 503 and no Slack command runs.
SLACK_SIGNING_SECRET = env.str("SLACK_SIGNING_SECRET", default="")
HTTP_TIMEOUT_SECONDS = env.float("HTTP_TIMEOUT_SECONDS", default=10.0)

# --- Consumer webhooks (outbox) ---
# Hosts that may receive webhooks even when they resolve to private addresses (a consumer on our own network).
WEBHOOK_ALLOWED_HOSTS = env.list("WEBHOOK_ALLOWED_HOSTS", default=[])
# Let webhooks go to private, loopback, link-local and reserved addresses (development; never production).
WEBHOOK_ALLOW_PRIVATE_TARGETS = env.bool("WEBHOOK_ALLOW_PRIVATE_TARGETS", default=DEBUG)
# How long one delivery attempt waits for the consumer's answer.
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=10.0)
if not 0 < WEBHOOK_TIMEOUT_SECONDS <= 30:
    raise ImproperlyConfigured("WEBHOOK_TIMEOUT_SECONDS must be more than 0 and at most 30 (the delivery lease)")

# --- Lifecycle and routing policy (defaults; the pool configuration row overrides what it holds) ---
MAX_MSGS_PER_HOUR = env.int("MAX_MSGS_PER_HOUR", default=20)
MAX_MSGS_PER_DAY = env.int("MAX_MSGS_PER_DAY", default=100)
WARMER_MIN_DAYS = env.int("WARMER_MIN_DAYS", default=21)
MAX_CHIPS_ACTIVE = env.int("MAX_CHIPS_ACTIVE", default=20)
TRUST_MIN_FOR_READY = env.int("TRUST_MIN_FOR_READY", default=85)
TRUST_DEGRADED_THRESHOLD = env.int("TRUST_DEGRADED_THRESHOLD", default=50)
DISCONNECTED_DEGRADE_MINUTES = env.int("DISCONNECTED_DEGRADE_MINUTES", default=30)
COOLING_MINUTES = env.int("COOLING_MINUTES", default=60)
MAX_NEW_CONTACTS_PER_DAY = env.int("MAX_NEW_CONTACTS_PER_DAY", default=40)
BINDING_TTL_DAYS = env.int("BINDING_TTL_DAYS", default=30)
# WhatsApp's "reach-out timelock" (error 463) does not say when it ends: assume this long.
TIMELOCK_HOURS = env.int("TIMELOCK_HOURS", default=24)
# The restriction signal 2.3.7 really sends (no code): first messages to this many different new contacts
# failing within this many hours (instances.restriction).
RESTRICTION_MIN_CONTACTS = env.int("RESTRICTION_MIN_CONTACTS", default=2)
RESTRICTION_WINDOW_HOURS = env.int("RESTRICTION_WINDOW_HOURS", default=6)
# A link started from the admin or the API (own numbers, re-links) lives this long.
LINK_VALID_MINUTES = env.int("LINK_VALID_MINUTES", default=15)
# An own number declared warm (an aged number) starts warming at this phase, its ramp dated this many days back.
WARM_NUMBER_PHASE = env.str("WARM_NUMBER_PHASE", default="pre_operation")
WARM_NUMBER_DAYS = env.int("WARM_NUMBER_DAYS", default=12)
# Sent once to a contact who just opted out, through the chip they wrote to; empty (the default): nothing is sent.
OPTOUT_CONFIRMATION_TEXT = env.str("OPTOUT_CONFIRMATION_TEXT", default="")
# A pending chip with no WhatsApp code after this long reads its line's inbox at Salvy, then alerts.
SMS_WAIT_MINUTES = env.int("SMS_WAIT_MINUTES", default=15)
# Message receipts (webhook dedup) are kept this long, then pruned daily.
WEBHOOK_RECEIPT_RETENTION_DAYS = env.int("WEBHOOK_RECEIPT_RETENTION_DAYS", default=7)
# A session that keeps "connecting" this long without opening is reported as a stuck link.
LINK_STUCK_MINUTES = env.int("LINK_STUCK_MINUTES", default=5)
# Releases of retired chips' outside resources: Evolution clean-up retried this many times (backoff), then alerted.
RELEASE_MAX_ATTEMPTS = env.int("RELEASE_MAX_ATTEMPTS", default=6)
HEALTH_CHECK_CONCURRENCY = env.int("HEALTH_CHECK_CONCURRENCY", default=50)
# Typing presence before a warming message (Evolution's sendText `delay` blocks the call that long).
WARMER_TYPING_MS_MAX = env.int("WARMER_TYPING_MS_MAX", default=4000)
# Warming sends in flight at once per dispatcher (the gateway holds each call for its typing delay).
WARMER_DISPATCH_CONCURRENCY = env.int("WARMER_DISPATCH_CONCURRENCY", default=8)
# A dispatch run (one a minute) sends batch after batch while actions are due, starting no batch after this many
# seconds: a batch may then take its sends' read timeout (20 s + the typing delay) within the task's 50 s limit.
WARMER_DISPATCH_BUDGET_SECONDS = env.float("WARMER_DISPATCH_BUDGET_SECONDS", default=20.0)


def _int_list(name: str, default: str, *, length: int | None = None, ascending: bool | None = None) -> list[int]:
    """A comma-separated list of non-negative integers (e.g. "20,40,80"); bad values fail at start-up."""
    raw = env.str(name, default=default)
    try:
        values = [int(part) for part in raw.split(",") if part.strip()]
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be comma-separated integers, got {raw!r}") from exc
    if any(v < 0 for v in values) or (length is not None and len(values) != length):
        raise ImproperlyConfigured(f"{name} must be {length or 'some'} non-negative integers, got {raw!r}")
    if ascending is not None and values != sorted(values, reverse=not ascending):
        raise ImproperlyConfigured(f"{name} must be in {'ascending' if ascending else 'descending'} order, "
                                   f"got {raw!r}")
    return values


# --- The pool brain (W2 5/7): avoid bans instead of counting them -----------------------------------------------
# Message kinds (instances.kinds): the trust a chip needs for each kind and the share (%) of its hourly cap the kind
# may use. prospecting: a contact who never wrote to us; follow_up (the default); reply: the contact wrote within
# 24 h, always allowed on the contact's own chip while it is in production (the hard caps still hold).
KIND_MIN_TRUST = dict(zip(("prospecting", "follow_up", "reply"),
                          _int_list("KIND_MIN_TRUST", "80,60,40", length=3), strict=True))
KIND_HOURLY_SHARE = dict(zip(("prospecting", "follow_up", "reply"),
                             _int_list("KIND_HOURLY_SHARE", "25,50,100", length=3), strict=True))
if any(v > 100 for v in [*KIND_MIN_TRUST.values(), *KIND_HOURLY_SHARE.values()]):
    raise ImproperlyConfigured("KIND_MIN_TRUST and KIND_HOURLY_SHARE are percentages (0-100)")
# Per-contact courtesy, pool-wide: at most this many messages to one contact per rolling hour (replies to what the
# contact writes are not refused by it), and never the same text to the same contact twice within 24 h.
CONTACT_MAX_PER_HOUR = env.int("CONTACT_MAX_PER_HOUR", default=3)
DUPLICATE_CONTENT_HOURS = env.int("DUPLICATE_CONTENT_HOURS", default=24)
# The growing new-contact allowance of a production chip (new contacts per rolling 24 h), step by step: a chip
# enters production at the first step and climbs one after each ALLOWANCE_STEP_DAYS days of clean delivery; a
# restriction or a rest takes it one step down. Empty: every production chip has MAX_NEW_CONTACTS_PER_DAY.
NEW_CONTACT_ALLOWANCE_STEPS = _int_list("NEW_CONTACT_ALLOWANCE_STEPS", "20,40,80", ascending=True)
ALLOWANCE_STEP_DAYS = env.int("ALLOWANCE_STEP_DAYS", default=7)
# Send circuit breaker per chip (instances.circuit, in Redis): CIRCUIT_FAILURES consecutive gateway failures open
# it for CIRCUIT_OPEN_SECONDS (no traffic), then one trial send decides (half-open; the trial may take
# CIRCUIT_TRIAL_SECONDS before another is let through). A 429-like refusal opens it at once for
# CIRCUIT_RATE_LIMITED_SECONDS, a 403-like one for CIRCUIT_FORBIDDEN_SECONDS.
CIRCUIT_ENABLED = env.bool("CIRCUIT_ENABLED", default=True)
CIRCUIT_FAILURES = env.int("CIRCUIT_FAILURES", default=3)
CIRCUIT_OPEN_SECONDS = env.int("CIRCUIT_OPEN_SECONDS", default=300)
CIRCUIT_TRIAL_SECONDS = env.int("CIRCUIT_TRIAL_SECONDS", default=60)
CIRCUIT_RATE_LIMITED_SECONDS = env.int("CIRCUIT_RATE_LIMITED_SECONDS", default=300)
CIRCUIT_FORBIDDEN_SECONDS = env.int("CIRCUIT_FORBIDDEN_SECONDS", default=3600)
# How long a process keeps what it read of the circuits for routing (0: read Redis on every decision); a circuit
# another process opens is seen here that much later.
CIRCUIT_GATES_CACHE_SECONDS = env.float("CIRCUIT_GATES_CACHE_SECONDS", default=1.0)
# After this many reservations a process has the capacity table vacuumed (instances.reservations: its hot rows'
# old versions slow every pick down); 0: leave it to autovacuum.
CAPACITY_VACUUM_EVERY = env.int("CAPACITY_VACUUM_EVERY", default=1000)
# How long a process remembers that a pick found no chip with room for a kind (instances.pool_full): new contacts
# of that kind are refused without the pick meanwhile; room that comes back elsewhere is seen that much later.
ROUTING_FULL_POOL_SECONDS = env.float("ROUTING_FULL_POOL_SECONDS", default=1.0)
# Early warning per production chip (instances.health_signals → chipfarm.brain), over the last hour and 24 h:
# thresholds as watch,rest,stop. Failed share: failed sends / attempted (a level when it reaches the value).
# Delivered share (24 h only: receipts take time): delivered / sent (a level when it falls below the value).
# Reply rate (24 h): replies / sent, below it: watch. Restrictions (463) in 24 h: this many → watch,rest.
EARLY_WARNING_ENABLED = env.bool("EARLY_WARNING_ENABLED", default=True)
EARLY_WARNING_FAILED_SHARE = _int_list("EARLY_WARNING_FAILED_SHARE", "5,10,20", length=3, ascending=True)
EARLY_WARNING_DELIVERED_SHARE = _int_list("EARLY_WARNING_DELIVERED_SHARE", "90,80,60", length=3, ascending=False)
EARLY_WARNING_REPLY_RATE = env.int("EARLY_WARNING_REPLY_RATE", default=20)
EARLY_WARNING_RESTRICTIONS = _int_list("EARLY_WARNING_RESTRICTIONS", "1,2", length=2, ascending=True)
# A window is judged only once it holds this many attempted sends (fewer say nothing), and a failed or delivered
# share rests or stops a chip only on at least EARLY_WARNING_MIN_FAILURES bad messages (fewer: watch).
EARLY_WARNING_MIN_SENDS = env.int("EARLY_WARNING_MIN_SENDS", default=10)
EARLY_WARNING_MIN_FAILURES = env.int("EARLY_WARNING_MIN_FAILURES", default=3)
# A rest cools the chip REST_MINUTES, doubled for each rest in the last REST_MEMORY_DAYS (at most REST_MAX_MINUTES);
# a chip that needs more than REST_MAX_REPEATS rests within REST_MEMORY_DAYS is stopped (degraded, replaced).
REST_MINUTES = env.int("REST_MINUTES", default=60)
REST_MAX_MINUTES = env.int("REST_MAX_MINUTES", default=24 * 60)
REST_MAX_REPEATS = env.int("REST_MAX_REPEATS", default=2)
REST_MEMORY_DAYS = env.int("REST_MEMORY_DAYS", default=7)
# The reserve forecast (chipfarm.forecast): losses (bans, degradations) and lead times from the last
# RESERVE_HISTORY_DAYS; the ready reserve covers RESERVE_COVER_DAYS of losses (and the worst week seen).
RESERVE_HISTORY_DAYS = env.int("RESERVE_HISTORY_DAYS", default=30)
RESERVE_COVER_DAYS = env.int("RESERVE_COVER_DAYS", default=7)
# The most chips auto_reserve may keep in reserve (ready_min + warmup_buffer): the pool configuration's default.
RESERVE_BUDGET = env.int("RESERVE_BUDGET", default=12)


def _parse_hhmm(name: str, default: str) -> time:
    raw = env.str(name, default=default)
    try:
        return time.fromisoformat(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be HH:MM, got {raw!r}") from exc


BUSINESS_HOURS_START = _parse_hhmm("BUSINESS_HOURS_START", "08:00")
BUSINESS_HOURS_END = _parse_hhmm("BUSINESS_HOURS_END", "20:00")
if BUSINESS_HOURS_START >= BUSINESS_HOURS_END:
    raise ImproperlyConfigured("BUSINESS_HOURS_START must be before BUSINESS_HOURS_END")
BUSINESS_TIMEZONE = env.str("BUSINESS_TIMEZONE", default="America/Sao_Paulo")
try:
    ZoneInfo(BUSINESS_TIMEZONE)
except (ZoneInfoNotFoundError, ValueError) as exc:
    raise ImproperlyConfigured(f"BUSINESS_TIMEZONE {BUSINESS_TIMEZONE!r} is not a known time zone") from exc

RUN_MODE = env.str("RUN_MODE", default="api")
if RUN_MODE not in {"api", "worker", "scheduler", "migrate"}:
    raise ImproperlyConfigured("RUN_MODE must be one of api, worker, scheduler, migrate")

# /health/deep fails when the last beat heartbeat or orchestrator cycle is older than these.
BEAT_MAX_AGE_SECONDS = env.int("BEAT_MAX_AGE_SECONDS", default=180)
CYCLE_MAX_AGE_SECONDS = env.int("CYCLE_MAX_AGE_SECONDS", default=300)
# Empty: /metrics is open; set: it needs "Authorization: Bearer <token>".
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# plain for people, json (one object per line) for log collectors; production defaults to json.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured("LOG_FORMAT must be plain or json")
# Masking happens where records are created (every handler, every process that loads these settings).
install_record_masking()

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # On the one handler, in every environment: every line gets the request id and is masked.
    "filters": {
        "request_id": {"()": "config.logging.RequestIdFilter"},
        "mask": {"()": "config.logging.MaskingFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "config.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["request_id", "mask"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's default "django" handlers would print a second, unmasked copy: root's handler only.
        "django": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        "django.db.backends": {"level": "WARNING"},
    },
}

NINJA_PAGINATION_PER_PAGE = 50
NINJA_PAGINATION_MAX_LIMIT = 500
