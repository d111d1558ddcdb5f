#!/usr/bin/env bash
# The headless browser for the browser tests (tests/browser): Debian's chromium, never Playwright's own
# download. Idempotent: does nothing but print the version when /usr/bin/chromium is already there.
set -euo pipefail
CHROMIUM=/usr/bin/chromium

if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" = 0 ]; then
    SUDO=()
  elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo -n)
  else
    echo "[install_browser] $CHROMIUM is missing and this is not root (and there is no sudo):" >&2
    echo "[install_browser] run as root: apt-get install -y --no-install-recommends chromium" >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "[install_browser] $CHROMIUM is missing and apt-get is not available: install Debian's chromium." >&2
    exit 1
  fi
  echo "[install_browser] installing Debian's chromium"
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  apt() { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq "$@" >"$log" 2>&1; }
  apt update \
    || { cat "$log" >&2; echo "[install_browser] apt-get update failed" >&2; exit 1; }
  apt install -y --no-install-recommends chromium \
    || { cat "$log" >&2; echo "[install_browser] apt-get install chromium failed (is the Debian mirror reachable?)" >&2
         exit 1; }
  [ -x "$CHROMIUM" ] || { echo "[install_browser] chromium installed but $CHROMIUM is not there" >&2; exit 1; }
fi

"$CHROMIUM" --version 2>/dev/null || { echo "[install_browser] $CHROMIUM does not run" >&2; exit 1; }
