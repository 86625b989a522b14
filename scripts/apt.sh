# Sourced by the install scripts: one way to install Debian packages on a machine that may be
# busy. `apt_install PKG...` waits up to 5 minutes for the package manager's lock (another
# apt-get or an unattended upgrade may hold it) instead of failing at once, never upgrades a
# package that is already installed (--no-upgrade: the suite must not change the system's
# Chromium or PostgreSQL under the user), and refreshes the package lists once if the first try
# fails. Output goes to stderr (stdout stays free for the scripts' own answers).
APT_LOCK_TIMEOUT_S=${SUANLI_APT_LOCK_TIMEOUT_S:-300}

apt_install() {
  if [ "$(id -u)" != "0" ]; then
    echo "missing Debian packages ($*) and this is not root: install them with apt-get" >&2
    return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  local options=(-y -qq --no-install-recommends --no-upgrade -o "DPkg::Lock::Timeout=${APT_LOCK_TIMEOUT_S}")
  apt-get install "${options[@]}" "$@" >&2 && return 0
  apt-get -o "DPkg::Lock::Timeout=${APT_LOCK_TIMEOUT_S}" update -qq >&2 &&
    apt-get install "${options[@]}" "$@" >&2
}
