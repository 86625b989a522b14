#!/usr/bin/env bash
# Start (or reuse) a throw-away S3-compatible server for the test suite on loopback, and print its
# endpoint URL: moto's standalone server (moto[server] 5.x from PyPI, in its own environment so
# that its pins never meet the project's). It speaks the S3 REST API with real request signing,
# buckets and objects kept in memory until it stops; any access key is accepted.
#   scripts/s3.sh start   -> prints http://127.0.0.1:55440 once it answers
#   scripts/s3.sh stop
#   scripts/s3.sh status   (exit 0 when it answers)
set -euo pipefail
PORT=${SUANLI_S3_PORT:-55440}
VENV=${SUANLI_S3_VENV:-/var/tmp/suanli/venv-s3}
DIR=${SUANLI_S3_DIR:-/tmp/suanli-s3}
URL="http://127.0.0.1:${PORT}"
PYTHON=${PYTHON:-python3}

answers() {
  "${PYTHON}" - "${URL}/" <<'PY'
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
except urllib.error.HTTPError:
    pass  # any HTTP answer: the server is up
except OSError:
    sys.exit(1)
PY
}

case "${1:-start}" in
  start)
    if ! test -x "${VENV}/bin/moto_server"; then
      echo "installing moto's S3 server into ${VENV}..." >&2
      mkdir -p "$(dirname "${VENV}")"
      test -x "${VENV}/bin/python" || "${PYTHON}" -m venv "${VENV}"
      "${VENV}/bin/python" -m pip install --quiet "moto[server]>=5.1,<5.3"
    fi
    mkdir -p "${DIR}"
    if ! answers; then
      nohup "${VENV}/bin/moto_server" -H 127.0.0.1 -p "${PORT}" >"${DIR}/moto.log" 2>&1 &
      echo $! >"${DIR}/pid"
      for _ in $(seq 1 100); do
        answers && break
        sleep 0.2
      done
      if ! answers; then
        echo "the S3 server did not answer on ${URL}; see ${DIR}/moto.log" >&2
        exit 1
      fi
    fi
    echo "${URL}"
    ;;
  stop)
    if [ -f "${DIR}/pid" ]; then
      kill "$(cat "${DIR}/pid")" 2>/dev/null || true
      rm -f "${DIR}/pid"
    fi
    ;;
  status)
    answers
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
