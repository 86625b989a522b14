#!/usr/bin/env bash
# Start (or reuse) a local two-node Ray cluster for the test suite: a head with its dashboard
# (the Jobs API) on 127.0.0.1, and a second node joining it on this same host, so that gang
# tasks (placement groups, STRICT_SPREAD) have two distinct nodes. Print the dashboard's
# address; stop it again. Needs ray[default] in .venv.
#   scripts/ray.sh start   -> prints http://127.0.0.1:8265 once both nodes are alive
#   scripts/ray.sh stop
#   scripts/ray.sh status   (exit 0 when a head answers and both nodes are alive)
# Each node declares SUANLI_RAY_CPUS CPUs (default 4) and SUANLI_RAY_GPUS GPUs (default 2) of
# model SUANLI_RAY_GPU_MODEL (default A100) whatever the machine has: GPUs as Ray's `GPU`
# resource, the model as Ray's `accelerator_type:<model>` resource (1 per node, Ray's own
# convention; a task asks for 0.001 of it). Object stores are kept small (SUANLI_RAY_STORE_MB,
# default 100 MB each): the test machines have little memory. Concurrent starts are serialised
# with flock on SUANLI_RAY_LOCK (default /tmp/suanli-ray-start.lock).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${SUANLI_RAY_BIN:-${ROOT}/.venv/bin}
CPUS=${SUANLI_RAY_CPUS:-4}
GPUS=${SUANLI_RAY_GPUS:-2}
MODEL=${SUANLI_RAY_GPU_MODEL:-A100}
STORE_BYTES=$(( ${SUANLI_RAY_STORE_MB:-100} * 1024 * 1024 ))
PORT=8265
GCS_PORT=6379
URL="http://127.0.0.1:${PORT}"
NODES=2

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

alive_nodes() {
  # How many nodes the dashboard counts alive (0 when it does not answer).
  "${BIN}/python" - "${URL}/api/v0/nodes?limit=10000" <<'PY' 2>/dev/null || echo 0
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=10) as answer:
    nodes = json.loads(answer.read())["data"]["result"]["result"]
print(sum(1 for node in nodes if node.get("state") == "ALIVE"))
PY
}

# A test cluster on loopback, without Ray's token authentication unless the caller asks for it:
# left unset, a `~/.ray/auth_token` that some earlier Ray call wrote makes the head demand the
# token while the joining node does not send it ("InvalidAuthToken"), so both nodes and every
# client here get the same explicit mode.
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"

NODE_ARGS=(--num-cpus="${CPUS}" --num-gpus="${GPUS}"
  --resources="{\"accelerator_type:${MODEL}\": 1}"
  --object-store-memory="${STORE_BYTES}" --node-ip-address=127.0.0.1 --disable-usage-stats)

case "${1:-}" in
  start)
    # one start at a time: concurrent test sessions would each add a second node
    exec 9>"${SUANLI_RAY_LOCK:-/tmp/suanli-ray-start.lock}"
    flock -w 300 9
    if [ ! -x "${BIN}/ray" ]; then
      echo "no Ray CLI at ${BIN}/ray: install ray[default] into .venv" >&2
      exit 1
    fi
    if ! answers; then
      "${BIN}/ray" start --head --port="${GCS_PORT}" "${NODE_ARGS[@]}" \
        --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="${PORT}" >&2
      for _ in $(seq 1 120); do
        answers && break
        sleep 0.5
      done
      if ! answers; then
        echo "Ray started but its dashboard does not answer at ${URL}" >&2
        exit 1
      fi
    fi
    alive=$(alive_nodes)
    if [ "${alive}" -lt "${NODES}" ]; then
      # the second node: same host, its own raylet and object store (ports chosen by Ray)
      "${BIN}/ray" start --address="127.0.0.1:${GCS_PORT}" "${NODE_ARGS[@]}" >&2
      for _ in $(seq 1 120); do
        alive=$(alive_nodes)
        [ "${alive}" -ge "${NODES}" ] && break
        sleep 0.5
      done
      if [ "${alive}" -lt "${NODES}" ]; then
        echo "Ray head is up but only ${alive} of ${NODES} nodes are alive" >&2
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
  status) # exit 0 when a dashboard answers and both nodes are alive
    answers && [ "$(alive_nodes)" -ge "${NODES}" ]
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
