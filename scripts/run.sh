#!/usr/bin/env bash
# `make run`: set everything up, then run web + Celery worker + beat in the foreground until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-8000}
# The demo's Slack is the sandbox's fake (sandbox/slack.py, started below on :8084; any path is a webhook):
# alerts and operations land there and the notifications page shows them sent. A real URL in the environment wins.
export SLACK_WEBHOOK_URL=${SLACK_WEBHOOK_URL:-http://127.0.0.1:8084/alerts}
export SLACK_OPERATIONS_WEBHOOK_URL=${SLACK_OPERATIONS_WEBHOOK_URL:-http://127.0.0.1:8084/operations}

bash scripts/services.sh
bash scripts/bootstrap.sh requirements-sandbox.txt
PY=.venv/bin/python

$PY manage.py migrate --noinput
$PY manage.py collectstatic --noinput -v 0
$PY manage.py bootstrap_demo

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo "[run] stopping..."
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

$PY manage.py sandbox --app-url "http://127.0.0.1:$PORT" --traffic &
pids+=($!)
.venv/bin/gunicorn config.wsgi:application --bind "127.0.0.1:$PORT" --workers 2 --threads 4 \
  --access-logfile - --graceful-timeout 5 &
pids+=($!)
.venv/bin/celery -A config worker -l INFO --concurrency 2 &
pids+=($!)
.venv/bin/celery -A config beat -l INFO &
pids+=($!)

cat <<TXT

[run] chipfarm is running:
      admin     http://127.0.0.1:$PORT/admin/
      API docs  http://127.0.0.1:$PORT/api/docs
      health    http://127.0.0.1:$PORT/health
      + a Celery worker, Celery beat, and the sandbox (fake Evolution :8081,
        Salvy :8082, VPS activator :8083, Slack :8084 — the app posts its alerts
        and operations there). Ctrl-C stops everything.

TXT
# Stop everything as soon as one process dies, so a crash is never silent.
wait -n "${pids[@]}"
echo "[run] a process exited; stopping the rest" >&2
exit 1
