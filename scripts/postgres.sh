#!/usr/bin/env bash
# Start (or reuse) a throw-away PostgreSQL server for the test suite, as a non-root user on a
# loopback port, and print its URL. Installs Debian's PostgreSQL when it is missing.
#   scripts/postgres.sh start   -> prints postgresql+psycopg://pgtest@127.0.0.1:55432/suanli
#   scripts/postgres.sh stop
#   scripts/postgres.sh status   (exit 0 when it is running)
set -euo pipefail
PORT=${SUANLI_PG_PORT:-55432}
DIR=${SUANLI_PG_DIR:-/tmp/suanli-pg}
USER_NAME=pgtest
URL="postgresql+psycopg://${USER_NAME}@127.0.0.1:${PORT}/suanli"

find_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

BIN=$(find_bin || true)
if [ -z "${BIN}" ] || [ ! -x "${BIN}/initdb" ]; then
  if [ "$(id -u)" != "0" ]; then
    echo "PostgreSQL is not installed and this is not root: install Debian's postgresql" >&2
    exit 1
  fi
  echo "installing PostgreSQL from Debian's packages..." >&2
  # shellcheck source=scripts/apt.sh
  . "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
  apt_install postgresql
  BIN=$(find_bin)
fi

as_pg() {
  if [ "$(id -u)" = "0" ]; then
    id -u "${USER_NAME}" >/dev/null 2>&1 || useradd -m "${USER_NAME}"
    runuser -u "${USER_NAME}" -- "$@"
  else
    "$@"
  fi
}

case "${1:-start}" in
  start)
    if [ "$(id -u)" = "0" ]; then
      id -u "${USER_NAME}" >/dev/null 2>&1 || useradd -m "${USER_NAME}"
      install -d -o "${USER_NAME}" "${DIR}"
    else
      mkdir -p "${DIR}"
    fi
    if [ ! -f "${DIR}/data/PG_VERSION" ]; then
      as_pg "${BIN}/initdb" -D "${DIR}/data" -U "${USER_NAME}" --auth=trust -E UTF8 \
        --no-locale >"${DIR}/initdb.log" 2>&1
    fi
    if ! as_pg "${BIN}/pg_ctl" -D "${DIR}/data" status >/dev/null 2>&1; then
      as_pg "${BIN}/pg_ctl" -D "${DIR}/data" -l "${DIR}/pg.log" -w start \
        -o "-p ${PORT} -k ${DIR} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" \
        >/dev/null
    fi
    as_pg "${BIN}/createdb" -h "${DIR}" -p "${PORT}" -U "${USER_NAME}" suanli 2>/dev/null || true
    echo "${URL}"
    ;;
  stop)
    as_pg "${BIN}/pg_ctl" -D "${DIR}/data" -m fast stop >/dev/null 2>&1 || true
    ;;
  status) # exit 0 when this script's server is running
    [ -f "${DIR}/data/PG_VERSION" ] && as_pg "${BIN}/pg_ctl" -D "${DIR}/data" status >/dev/null 2>&1
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
