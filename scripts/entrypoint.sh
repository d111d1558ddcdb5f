#!/bin/sh
# The image's one entrypoint. RUN_MODE picks the process, which replaces this shell (exec) so that it is
# PID 1 and receives the orchestrator's SIGTERM directly (graceful shutdown of gunicorn and Celery):
#
#   api        gunicorn (WSGI) on 0.0.0.0:$PORT, $WEB_CONCURRENCY processes x $GUNICORN_THREADS threads
#   worker     Celery worker, $CELERY_CONCURRENCY processes    (scale: as many as the queue needs)
#   scheduler  Celery beat with the database scheduler         (run EXACTLY ONE)
#   migrate    migrate + collectstatic, then exit               (a one-shot before a rollout)
#
# The mode may also be the first argument (`docker run IMAGE worker`), and arguments starting with "-" are
# passed to the mode's process; `healthcheck` checks the running mode (the image's HEALTHCHECK). Any other
# command runs as given (`docker run IMAGE python manage.py shell`).
set -eu
cd "$(dirname "$0")/.."

mode=${RUN_MODE:-}
if [ "$#" -gt 0 ]; then
  case "$1" in
    api|worker|scheduler|migrate|healthcheck) mode=$1; shift ;;
    -*) ;;  # options for the RUN_MODE process, e.g. `worker -Q other`
    *) exec "$@" ;;
  esac
fi

log_level=${LOG_LEVEL:-INFO}

case "$mode" in
  api)
    # The access log leaves out query strings and referers (they can carry phone numbers) and ends
    # with the request id that the app's own log lines carry.
    exec gunicorn config.wsgi:application \
      --bind "0.0.0.0:${PORT:-8000}" \
      --workers "${WEB_CONCURRENCY:-2}" \
      --threads "${GUNICORN_THREADS:-4}" \
      --timeout "${GUNICORN_TIMEOUT:-60}" \
      --graceful-timeout 30 \
      --worker-tmp-dir /dev/shm \
      --no-control-socket \
      --access-logfile - \
      --error-logfile - \
      --access-logformat '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms "%(a)s" rid=%({x-request-id}o)s' \
      "$@"
    ;;
  worker)
    exec celery -A config worker \
      --loglevel "$log_level" \
      --concurrency "${CELERY_CONCURRENCY:-2}" \
      "$@"
    ;;
  scheduler)
    # One beat only: two would queue every periodic task twice. Its schedule lives in
    # config/celery.py; the DatabaseScheduler syncs it into the tables the admin shows.
    exec celery -A config beat \
      --loglevel "$log_level" \
      --scheduler django_celery_beat.schedulers:DatabaseScheduler \
      "$@"
    ;;
  migrate)
    python manage.py migrate --noinput
    exec python manage.py collectstatic --noinput -v 0
    ;;
  healthcheck)
    case "${RUN_MODE:-api}" in
      api)
        # /health (a DB round trip) over loopback; Host is the first ALLOWED_HOSTS entry so that the
        # host check passes, X-Forwarded-Proto so that the HTTPS redirect does not.
        exec python - <<'PY'
import os
import sys
import urllib.request

host = (os.environ.get("ALLOWED_HOSTS") or "localhost").split(",")[0].strip().lstrip(".")
host = "localhost" if host in ("", "*") else host
request = urllib.request.Request(f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/health",
                                 headers={"Host": host, "X-Forwarded-Proto": "https"})
try:
    with urllib.request.urlopen(request, timeout=5) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as exc:
    print(f"healthcheck failed: {exc}", file=sys.stderr)
    sys.exit(1)
PY
        ;;
      worker)
        exec celery -A config inspect ping --destination "celery@${HOSTNAME:-$(hostname)}" --timeout 5
        ;;
      *)
        # beat and one-shots have no endpoint; beat's liveness shows in /health/deep ("beat").
        exit 0
        ;;
    esac
    ;;
  "")
    echo "entrypoint: RUN_MODE is not set; use RUN_MODE=api, worker, scheduler or migrate." >&2
    exit 2
    ;;
  *)
    echo "entrypoint: unknown RUN_MODE '$mode'; use api, worker, scheduler or migrate." >&2
    exit 2
    ;;
esac
