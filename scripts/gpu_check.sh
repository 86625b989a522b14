#!/usr/bin/env bash
# Measured vs modelled energy of one real task on this machine's first NVIDIA GPU, through the
# agent's own path: a provider agent (suanli.agent.Agent, local backend) leases one GPU task from
# a minimal in-process server that speaks the agent protocol, binds it to GPU 0, meters it with
# NVML (suanli.agent.energy) and reports its usage; the report's measured kWh is printed beside the
# modelled figure (the device's catalog TDP x the run time, utilisation 1, PUE 1: the devices'
# own draw, as the measured figure is) as one JSON object on stdout.
#
#   scripts/gpu_check.sh            # 30 s workload
#   SUANLI_GPU_CHECK_S=10 scripts/gpu_check.sh
#   SUANLI_GPU_CHECK_DEVICE="NVIDIA H100 SXM5 80GB" scripts/gpu_check.sh   # catalog name to model
# The TDP is the catalog's for the GPU's name, else (a model the catalog lacks) the board's
# default power limit as NVML reports it.
#
# Workload: a matrix-multiply loop on the GPU with torch (or cupy) when the venv has one; else a
# CPU busy loop, so the GPU is measured idle (the JSON says which). The workload never calls
# nvidia-smi. Installs nothing but nvidia-ml-py (module pynvml) into .venv when it is missing.
# Exits 2 with a message when the machine has no NVIDIA GPU or NVML cannot start, or when the
# task did not complete with a measured energy.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${SUANLI_PYTHON:-${ROOT}/.venv/bin/python}
SECONDS_RUN=${SUANLI_GPU_CHECK_S:-30}

if [ ! -x "${PY}" ]; then
  echo "gpu_check: no Python at ${PY} (make the venv first, or set SUANLI_PYTHON)" >&2
  exit 2
fi
if ! "${PY}" -c 'import pynvml' 2>/dev/null; then
  echo "gpu_check: installing nvidia-ml-py into the venv" >&2
  "${PY}" -m pip install --quiet 'nvidia-ml-py>=12.535,<14'
fi

cd "${ROOT}"
PYTHONPATH="${ROOT}/src${PYTHONPATH:+:${PYTHONPATH}}" exec "${PY}" - "${SECONDS_RUN}" <<'PY'
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pynvml

from suanli.agent import Agent
from suanli.agent.backends.local import LocalBackend
from suanli.errors import SuanliError
from suanli.metering import energy_kwh, find_device

seconds = float(sys.argv[1])


def fail(message):
    print(f"gpu_check: {message}", file=sys.stderr)
    sys.exit(2)


try:
    pynvml.nvmlInit()
    count = pynvml.nvmlDeviceGetCount()
except pynvml.NVMLError as exc:
    fail(f"NVML cannot start here ({exc}): no NVIDIA GPU or driver")
if count < 1:
    fail("NVML sees no NVIDIA GPU on this machine")
handle = pynvml.nvmlDeviceGetHandleByIndex(0)
name = pynvml.nvmlDeviceGetName(handle)
name = name.decode() if isinstance(name, bytes) else str(name)
try:
    pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    source = "energy counter (nvmlDeviceGetTotalEnergyConsumption)"
except pynvml.NVMLError:
    source = "power samples (nvmlDeviceGetPowerUsage), integrated"
try:  # the board's default power limit: the TDP when the catalog does not know the model
    default_limit_w = pynvml.nvmlDeviceGetPowerManagementDefaultLimit(handle) / 1000.0
except pynvml.NVMLError:
    default_limit_w = None
pynvml.nvmlShutdown()

WORKLOAD = f"""
import time
end = time.monotonic() + {seconds}
kind = "cpu busy loop (GPU idle)"
try:
    import torch
    if not torch.cuda.is_available():
        raise RuntimeError("torch without CUDA")
    a = torch.randn(8192, 8192, device="cuda")
    while time.monotonic() < end:
        a = torch.tanh(a @ a)
    torch.cuda.synchronize()
    kind = "torch matmul loop"
except Exception:
    try:
        import cupy
        a = cupy.random.rand(8192, 8192, dtype=cupy.float32)
        while time.monotonic() < end:
            a = cupy.tanh(a @ a)
        cupy.cuda.Device().synchronize()
        kind = "cupy matmul loop"
    except Exception:
        while time.monotonic() < end:
            pass
print(kind)
"""

TOKEN = "gpu-check"
reports = {}
task = {
    "id": "gpu-check",
    "executors": [{"command": [sys.executable, "-c", WORKLOAD], "env": {}, "workdir": None}],
    "devices": 1,
    "device_kind": "gpu",
    "lease_expires_at": "2099-01-01T00:00:00Z",
}
queue = [task]
lock = threading.Lock()
done = threading.Event()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        parts = self.path.strip("/").split("/")
        with lock:
            if parts == ["v1", "agents"]:
                code, answer = 201, {"id": "a-1", "lease_s": 600, "heartbeat_s": 1}
            elif parts[-1] == "heartbeat":
                code, answer = 200, {"cancel": []}
            elif parts[-1] == "lease":
                tasks = queue[: body["max"]]
                del queue[: body["max"]]
                code, answer = 200, {"tasks": tasks}
            elif parts[-1] == "report":
                reports.setdefault(parts[2], []).append(body)
                if body["state"] != "RUNNING":
                    done.set()
                code, answer = 200, {}
            else:
                code, answer = 404, {"detail": "no such route"}
        data = json.dumps(answer).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
lines = []
work_root = Path(tempfile.mkdtemp(prefix="suanli-gpu-check-"))
agent = Agent(
    f"http://127.0.0.1:{server.server_address[1]}",
    TOKEN,
    "gpu-check-site",
    LocalBackend(accelerators={"gpu": ["0"]}),
    slots=1,
    work_root=work_root,
    poll_s=0.2,
    sample_every_s=1.0,
    log=lines.append,
)
stop = threading.Event()
runner = threading.Thread(target=agent.run, args=(stop,), daemon=True)
runner.start()
if not done.wait(timeout=seconds + 120):
    stop.set()
    fail("the task did not end in time; agent log:\n" + "\n".join(lines))
stop.set()
runner.join(timeout=30)
server.shutdown()
shutil.rmtree(work_root, ignore_errors=True)

final = reports["gpu-check"][-1]
usage = final["usage"]
try:
    profile = find_device(os.environ.get("SUANLI_GPU_CHECK_DEVICE") or name)
    tdp_w, tdp_source = profile.tdp_w, f"catalog {profile.id}"
except SuanliError:
    profile, tdp_w, tdp_source = None, default_limit_w, "NVML default power limit"
modelled = (
    energy_kwh(1, tdp_w / 1000.0, 1.0, usage["wall_s"] / 3600.0, 1.0) if tdp_w else None
)
print(
    json.dumps(
        {
            "gpu": name,
            "catalog_device": None if profile is None else profile.id,
            "state": final["state"],
            "workload": final["stdout_tail"].strip().splitlines()[-1:],
            "wall_s": usage["wall_s"],
            "measured": {
                "energy_kwh": usage.get("energy_kwh"),
                "utilisation": usage.get("utilisation"),
                "source": source,
                "scope": "devices",
            },
            "modelled": {
                "energy_kwh": modelled,
                "tdp_w": tdp_w,
                "tdp_source": tdp_source,
                "basis": "TDP x wall time, utilisation 1, PUE 1 (the platform's model)",
                "scope": "devices",
            },
            "ratio_measured_to_modelled": (
                usage["energy_kwh"] / modelled
                if modelled and usage.get("energy_kwh") is not None
                else None
            ),
            "agent_log": lines,
        },
        indent=2,
    )
)
if final["state"] != "COMPLETE" or usage.get("energy_kwh") is None:
    fail("the task did not complete with a measured energy (see agent_log)")
PY
