# One image for every process: RUN_MODE=api | worker | scheduler | migrate (scripts/entrypoint.sh).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=config.settings.production \
    PORT=8000

WORKDIR /app

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
# (psycopg[binary] ships its own libpq: no compiler or system packages needed.)
# WITH_SANDBOX=1 also installs the fake providers' requirements (the compose stack's sandbox service).
ARG WITH_SANDBOX=0
COPY requirements.txt requirements-sandbox.txt ./
RUN if [ "$WITH_SANDBOX" = "1" ]; then pip install -r requirements-sandbox.txt; else pip install -r requirements.txt; fi

COPY . .

# Static files are baked into the image (whitenoise serves them). The settings need a SECRET_KEY and
# ALLOWED_HOSTS to import; these build-only values never reach a running container.
RUN SECRET_KEY=build-only-collectstatic-dummy-secret-key-not-used-at-runtime-0123456789 \
    ALLOWED_HOSTS=localhost \
    python manage.py collectstatic --noinput -v 0 \
 && chmod 0755 scripts/entrypoint.sh \
 && groupadd --system --gid 10001 chipfarm \
 && useradd --system --uid 10001 --gid chipfarm --home-dir /app --no-create-home --shell /usr/sbin/nologin chipfarm \
 && chown -R chipfarm:chipfarm /app/staticfiles

# The code stays root-owned and read-only for the process.
USER chipfarm

EXPOSE 8000

# api: GET /health (a DB round trip); worker: a Celery ping; scheduler and migrate: nothing to probe.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["/app/scripts/entrypoint.sh", "healthcheck"]

ENTRYPOINT ["/app/scripts/entrypoint.sh"]
