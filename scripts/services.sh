#!/usr/bin/env bash
# Make sure PostgreSQL (>= 14) and Redis (>= 6) are up, and that chipfarm's database role and database
# exist. Starts installed-but-stopped servers; with --install, apt-installs missing ones (CI).
# Says how to fix what it cannot.
set -euo pipefail

INSTALL=0
[ "${1:-}" = "--install" ] && INSTALL=1

PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
REDIS_HOST=${REDIS_HOST:-127.0.0.1}
REDIS_PORT=${REDIS_PORT:-6379}
SUDO=""
[ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"

say() { printf '[services] %s\n' "$*"; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

apt_install() {
  say "installing $* with apt"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

pg_up() { pg_isready -q -h "$PGHOST" -p "$PGPORT" 2>/dev/null; }
redis_up() { [ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]; }

start_postgres() {
  local version
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  [ -n "$version" ] || return 1
  say "starting PostgreSQL $version"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
    || $SUDO pg_ctlcluster "$version" main start 2>/dev/null || true
  for _ in $(seq 1 30); do pg_up && return 0; sleep 1; done
  return 1
}

# --- PostgreSQL -------------------------------------------------------------------------------
if ! command -v pg_isready >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
  if ! pg_up 2>/dev/null; then
    if [ "$INSTALL" = 1 ]; then apt_install postgresql postgresql-client; else
      die "PostgreSQL is not installed. Install it (Debian/Ubuntu: sudo apt-get install postgresql) or set DATABASE_URL to a server >= 14."
    fi
  fi
fi
if ! pg_up; then
  start_postgres || die "PostgreSQL is not answering on $PGHOST:$PGPORT. Start it: sudo pg_ctlcluster \$(ls /etc/postgresql) main start"
fi
say "PostgreSQL is up on $PGHOST:$PGPORT"

# --- Redis --------------------------------------------------------------------------------------
if ! redis_up; then
  if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$INSTALL" = 1 ]; then apt_install redis-server; else
      die "Redis is not installed. Install it (Debian/Ubuntu: sudo apt-get install redis-server) or set REDIS_URL to a server >= 6."
    fi
  fi
  say "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no >/dev/null
  for _ in $(seq 1 20); do redis_up && break; sleep 0.5; done
  redis_up || die "Redis is not answering on $REDIS_HOST:$REDIS_PORT. Start it: redis-server --daemonize yes --port $REDIS_PORT"
fi
say "Redis is up on $REDIS_HOST:$REDIS_PORT"

redis_major=$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" info server | sed -n 's/^redis_version:\([0-9]*\).*/\1/p' | tr -d '\r')
[ -n "$redis_major" ] && [ "$redis_major" -lt 6 ] && die "Redis $redis_major is too old: chipfarm needs Redis >= 6."

# --- the role and the database (only for the default local DATABASE_URL) ------------------------
if [ -z "${DATABASE_URL:-}" ]; then
  as_superuser() {
    # Trust auth over TCP as postgres, else peer auth over the socket as the postgres OS user.
    psql -h "$PGHOST" -p "$PGPORT" -U postgres -tAqc "$1" 2>/dev/null \
      || { [ "$(id -u)" = "0" ] && runuser -u postgres -- psql -p "$PGPORT" -tAqc "$1"; } \
      || $SUDO -u postgres psql -p "$PGPORT" -tAqc "$1"
  }
  pg_major=$(as_superuser "SHOW server_version_num" | head -c 2) \
    || die "cannot reach PostgreSQL as a superuser to create the 'chipfarm' role; create it yourself: CREATE ROLE chipfarm LOGIN CREATEDB PASSWORD 'chipfarm'; CREATE DATABASE chipfarm OWNER chipfarm;"
  [ "$pg_major" -lt 14 ] && die "PostgreSQL $pg_major is too old: chipfarm needs PostgreSQL >= 14."
  if [ "$(as_superuser "SELECT 1 FROM pg_roles WHERE rolname = 'chipfarm'")" != "1" ]; then
    say "creating the database role chipfarm"
    as_superuser "CREATE ROLE chipfarm LOGIN CREATEDB PASSWORD 'chipfarm'" >/dev/null
  fi
  if [ "$(as_superuser "SELECT 1 FROM pg_database WHERE datname = 'chipfarm'")" != "1" ]; then
    say "creating the database chipfarm"
    as_superuser "CREATE DATABASE chipfarm OWNER chipfarm" >/dev/null
  fi
  say "database role and database chipfarm are ready"
fi
