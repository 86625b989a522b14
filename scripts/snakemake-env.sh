#!/usr/bin/env bash
# Build .venv-snakemake: Snakemake with its TES executor plugin, for the Snakemake-on-TES test
# and for docs/tes.md. A separate environment because the plugin pins py-tes < 0.5 while suanli's
# own tests use py-tes 1.x. The fs storage plugin needs rsync, installed from Debian if missing;
# the S3 storage plugin reads and writes a workflow's data in buckets (docs/tes.md).
# Keep it outside /tmp: the local backend gives each task a private /tmp, which would hide it.
#   scripts/snakemake-env.sh [VENV]   (default /var/tmp/suanli/venv-snakemake)
set -euo pipefail
VENV=${1:-/var/tmp/suanli/venv-snakemake}
mkdir -p "$(dirname "${VENV}")"
PYTHON=${PYTHON:-python3}

if ! command -v rsync >/dev/null 2>&1; then
  echo "installing rsync from Debian's packages..." >&2
  # shellcheck source=scripts/apt.sh
  . "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
  apt_install rsync
fi

test -x "${VENV}/bin/python" || "${PYTHON}" -m venv "${VENV}"
# py-tes 0.4.2 imports six without declaring it
"${VENV}/bin/python" -m pip install --quiet \
  "snakemake>=9.20,<10" \
  "snakemake-executor-plugin-tes==0.1.3" \
  "snakemake-storage-plugin-fs>=1.1,<2" \
  "snakemake-storage-plugin-s3>=0.3,<1" \
  "six>=1.16,<2"
touch "${VENV}/.installed"
