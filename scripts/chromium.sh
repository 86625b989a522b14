#!/usr/bin/env bash
# Make sure Debian's Chromium is installed for the console's browser tests (Playwright drives
# it through executable_path; `playwright install` cannot download browsers here), with a CJK
# font so that screenshots show the Chinese pages as text. Prints its path.
set -euo pipefail
CHROMIUM=${SUANLI_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "${CHROMIUM}" ] || ! fc-list 2>/dev/null | grep -qi "wenquanyi"; then
  if [ "$(id -u)" != "0" ]; then
    echo "Chromium is missing and this is not root: install Debian's chromium" >&2
    exit 1
  fi
  echo "installing Chromium and a CJK font from Debian's packages..." >&2
  export DEBIAN_FRONTEND=noninteractive
  packages=(chromium fonts-wqy-microhei fontconfig)
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2 \
    || { apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2; }
fi
echo "${CHROMIUM}"
