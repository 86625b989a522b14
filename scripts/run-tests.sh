#!/usr/bin/env bash
# The whole test suite with the services it needs: PostgreSQL, an S3-compatible server (moto), a
# two-node Slurm and a two-node Ray head are started (installed first when missing), Chromium is installed, pytest runs, and
# every service this script started is stopped again when it ends (also on failure or Ctrl-C);
# a service that was already running before is left running. An engine that cannot start does
# not stop the run: its backend's tests are skipped with the reason (pytest's summary lists them)
# and a banner says which backend was NOT TESTED.
#   scripts/run-tests.sh [PYTEST ARGS...]     (make test runs it with -n auto)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=.venv/bin
not_tested=()
started=()

stop_started() {
  local service
  for service in "${started[@]}"; do
    scripts/"${service}".sh stop >/dev/null 2>&1 || true
  done
}
trap stop_started EXIT

start() { # start SERVICE: start it with scripts/SERVICE.sh, remembering it when it was not up
  local was_running=1
  scripts/"$1".sh status >/dev/null 2>&1 || was_running=0
  scripts/"$1".sh start || return 1
  [ "${was_running}" = 1 ] || started+=("$1")
}

if ! start slurm >/dev/null; then
  export SUANLI_SKIP_SLURM=1
  not_tested+=("slurm (scripts/slurm.sh start failed; see its message above)")
fi
if ! start ray >/dev/null; then
  export SUANLI_SKIP_RAY=1
  not_tested+=("ray (scripts/ray.sh start failed; see its message above)")
fi
# Chromium for the console's browser tests, installed here, once, before pytest's workers
# start (two workers installing at once would fight over dpkg's lock)
scripts/chromium.sh >/dev/null || echo "*** Chromium could not be installed: the console's browser tests will fail ***" >&2

banner() {
  for line in "${not_tested[@]}"; do
    echo "*** backend NOT TESTED: ${line} ***" >&2
  done
}
banner

pg_was_running=1
scripts/postgres.sh status >/dev/null 2>&1 || pg_was_running=0
SUANLI_TEST_PG_URL=$(scripts/postgres.sh start) || exit 1
[ "${pg_was_running}" = 1 ] || started+=(postgres)
export SUANLI_TEST_PG_URL
s3_was_running=1
scripts/s3.sh status >/dev/null 2>&1 || s3_was_running=0
SUANLI_TEST_S3_URL=$(scripts/s3.sh start) || exit 1
[ "${s3_was_running}" = 1 ] || started+=(s3)
export SUANLI_TEST_S3_URL
"${BIN}/pytest" "$@"
status=$?
banner
exit "${status}"
