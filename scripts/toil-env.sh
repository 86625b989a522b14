#!/usr/bin/env bash
# Build Toil's environment for the Toil-on-TES test and docs/tes.md: Toil 5.12.0, the last Toil
# with a TES batch system (`--batchSystem tes`), which pins py-tes 0.4.2 (py-tes 0.4.2 imports
# six without declaring it). A separate environment: the suite itself uses py-tes 1.x.
# Keep it outside /tmp: the local backend gives each task a private /tmp, and the agent's tasks
# run this environment's Toil worker.
#   scripts/toil-env.sh [VENV]   (default /var/tmp/suanli/venv-toil)
set -euo pipefail
VENV=${1:-/var/tmp/suanli/venv-toil}
mkdir -p "$(dirname "${VENV}")"
PYTHON=${PYTHON:-python3}

test -x "${VENV}/bin/python" || "${PYTHON}" -m venv "${VENV}"
"${VENV}/bin/python" -m pip install --quiet "toil==5.12.0" "six>=1.16,<2"
touch "${VENV}/.installed"
