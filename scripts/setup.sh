#!/usr/bin/env bash
# Set up this checkout on a fresh Debian machine: the system packages a purpose needs, a virtual
# environment in .venv, and the package installed into it. Idempotent; quiet when all is there.
#
#   scripts/setup.sh demo   what `ors-migrate demo` needs: redis-server
#   scripts/setup.sh test   what the whole test suite needs: redis-server and redis-cli, sshd,
#                           tmux, chromium, and the test extras
#
# System packages are installed with apt-get as root, else with `sudo -n` when that works; when
# neither can, the one command to run is printed and the exit status is 2.
set -euo pipefail
cd "$(dirname "$0")/.."

purpose=${1:-}
case "$purpose" in
  demo) extras="" ;;
  test) extras="[test]" ;;
  *) echo "usage: scripts/setup.sh demo|test" >&2; exit 2 ;;
esac

# The packages a purpose needs, each with the file that proves it is installed.
missing=()
need() {  # need PACKAGE PATH
  [ -x "$2" ] || missing+=("$1")
}
need redis-server /usr/bin/redis-server
if [ "$purpose" = test ]; then
  need redis-tools /usr/bin/redis-cli
  need openssh-server /usr/sbin/sshd
  need openssh-client /usr/bin/ssh-keygen
  need tmux /usr/bin/tmux
  need chromium /usr/bin/chromium
fi

if [ ${#missing[@]} -gt 0 ]; then
  install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends
           "${missing[@]}")
  if [ "$(id -u)" -eq 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    echo "setup: missing system packages: ${missing[*]}" >&2
    echo "run this once, then run this script again:" >&2
    echo "  sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 2
  fi
  echo "setup: installing ${missing[*]} (apt-get)" >&2
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" "${install[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e ".${extras}"
