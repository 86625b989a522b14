#!/usr/bin/env bash
# Make sure Debian's Chromium is installed for the console's browser tests (Playwright drives
# it through executable_path; `playwright install` cannot download browsers here), with a CJK
# font so that screenshots show the Chinese pages as text. Prints its path.
set -euo pipefail
CHROMIUM=${SUANLI_CHROMIUM:-/usr/bin/chromium}
# shellcheck source=scripts/apt.sh
. "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
packages=()
[ -x "${CHROMIUM}" ] || packages+=(chromium)  # a browser already there is used as it is
fc-list 2>/dev/null | grep -qi "wenquanyi" || packages+=(fonts-wqy-microhei fontconfig)
if [ "${#packages[@]}" -gt 0 ]; then
  echo "installing ${packages[*]} from Debian's packages..." >&2
  apt_install "${packages[@]}"
fi
echo "${CHROMIUM}"
