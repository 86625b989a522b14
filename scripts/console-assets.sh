#!/usr/bin/env bash
# Install the console's front-end libraries from the npm registry into the package's static
# folder (ignored by git): htmx 2, Apache ECharts 6, and the China map (GeoJSON) that ECharts 4
# shipped (ECharts 5+ no longer does). Nothing is loaded from a CDN at run time.
#   scripts/console-assets.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENDOR=src/suanli/console/static/vendor
BUILD=.console-npm
if [ -f "${VENDOR}/.installed" ]; then exit 0; fi
if ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" != "0" ]; then
    echo "npm is missing and this is not root: install Debian's npm" >&2
    exit 1
  fi
  echo "installing npm from Debian's packages..." >&2
  # shellcheck source=scripts/apt.sh
  . scripts/apt.sh
  apt_install npm
fi
mkdir -p "${BUILD}" "${VENDOR}"
( cd "${BUILD}" && [ -f package.json ] || echo '{"private": true}' > package.json )
( cd "${BUILD}" && npm install --silent --no-audit --no-fund \
    "htmx.org@2.0.4" "echarts@6" "echarts-map@npm:echarts@4.9.0" >&2 )
cp "${BUILD}/node_modules/htmx.org/dist/htmx.min.js" "${VENDOR}/"
cp "${BUILD}/node_modules/echarts/dist/echarts.min.js" "${VENDOR}/"
cp "${BUILD}/node_modules/echarts-map/map/json/china.json" "${VENDOR}/china.json"
cp "${BUILD}/node_modules/echarts/LICENSE" "${VENDOR}/LICENSE-echarts"
cp "${BUILD}/node_modules/htmx.org/LICENSE" "${VENDOR}/LICENSE-htmx" 2>/dev/null || true
touch "${VENDOR}/.installed"
