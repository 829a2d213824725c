#!/usr/bin/env bash
# Sets up everything the test suite needs on a fresh machine, then runs it:
# the virtualenv with the dev extras, Debian's Chromium for the browser test,
# the lint and type checks, and pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$python" -m venv .venv
fi
log "installing fleets-mailbox[dev] into .venv"
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian's chromium for the browser test"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    log "chromium is missing and cannot be installed here: the browser test will skip"
  fi
fi

log "ruff"
.venv/bin/ruff check src tests examples bench
.venv/bin/ruff format --check src tests examples bench
log "mypy"
.venv/bin/mypy

# The real servers the adapter tests need, except those the caller points
# the variables at itself.
services=()
[ -n "${FLEETS_TEST_MONGO_URI:-}" ] || services+=(mongo)
[ -n "${FLEETS_TEST_MYSQL_URL:-}" ] || services+=(mysql)
[ -n "${FLEETS_TEST_ROCKETMQ_ENDPOINTS:-}" ] || services+=(rocketmq)
if [ ${#services[@]} -gt 0 ]; then
  log "starting ${services[*]} (scripts/services.sh)"
  trap 'scripts/services.sh down >/dev/null 2>&1 || true' EXIT
  eval "$(scripts/services.sh up "${services[@]}")"
fi

log "pytest"
.venv/bin/pytest "$@"
