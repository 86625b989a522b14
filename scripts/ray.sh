#!/usr/bin/env bash
# Start (or reuse) a local Ray head for the test suite, with its dashboard (the Jobs API) on
# 127.0.0.1, and print the dashboard's address; stop it again. Needs ray[default] in .venv.
#   scripts/ray.sh start   -> prints http://127.0.0.1:8265
#   scripts/ray.sh stop
#   scripts/ray.sh status   (exit 0 when a head answers)
# SUANLI_RAY_CPUS (default 4) is the CPU count the head declares, whatever the machine has.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${SUANLI_RAY_BIN:-${ROOT}/.venv/bin}
CPUS=${SUANLI_RAY_CPUS:-4}
PORT=8265
URL="http://127.0.0.1:${PORT}"

answers() {
  # Any HTTP answer (401 included: token auth is on) means a dashboard is up.
  "${BIN}/python" - "${URL}/api/version" <<'PY'
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
except urllib.error.HTTPError:
    pass
except OSError:
    sys.exit(1)
PY
}

case "${1:-}" in
  start)
    if [ ! -x "${BIN}/ray" ]; then
      echo "no Ray CLI at ${BIN}/ray: install ray[default] into .venv" >&2
      exit 1
    fi
    if ! answers; then
      "${BIN}/ray" start --head --num-cpus="${CPUS}" --node-ip-address=127.0.0.1 \
        --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="${PORT}" \
        --disable-usage-stats >&2
      for _ in $(seq 1 120); do
        answers && break
        sleep 0.5
      done
      if ! answers; then
        echo "Ray started but its dashboard does not answer at ${URL}" >&2
        exit 1
      fi
    fi
    echo "${URL}"
    ;;
  stop)
    if [ -x "${BIN}/ray" ]; then
      "${BIN}/ray" stop --force >&2 || true
    fi
    ;;
  status) # exit 0 when a dashboard answers
    answers
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
