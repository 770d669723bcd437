#!/bin/sh
# kata-npu installer for Debian 12 / Ubuntu 24.04 and other PEP 668 ("externally managed") systems.
#
#   ./install.sh          as root (re-runs itself with sudo otherwise): a private venv in
#                         /opt/kata-npu/venv with this checkout installed, and the commands
#                         linked into /usr/local/bin, which root's PATH, sudo's secure_path and
#                         systemd's ExecStart search all include. Re-run to upgrade.
#   ./install.sh --dev    no root needed: ./.venv with this checkout editable + test extras
#                         (then: .venv/bin/python -m pytest).
#
# Never pip-installs into the system Python and never uses --break-system-packages.
# Needs only python3 (>= 3.11); python3-venv is installed with apt-get when missing.
# Environment: KATA_NPU_PREFIX (default /opt/kata-npu), KATA_NPU_BIN (default /usr/local/bin).
set -eu

SRC=$(cd "$(dirname "$0")" && pwd)
PREFIX=${KATA_NPU_PREFIX:-/opt/kata-npu}
BIN=${KATA_NPU_BIN:-/usr/local/bin}
PY=${PYTHON:-python3}

die() { echo "install.sh: $1" >&2; exit "${2:-1}"; }

mode=system
case "${1:-}" in
  "") ;;
  --dev) mode=dev ;;
  -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument '$1' (usage: ./install.sh [--dev])" 2 ;;
esac
[ $# -le 1 ] || die "too many arguments (usage: ./install.sh [--dev])" 2

if [ "$mode" = system ] && [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || die "run as root: installs into $PREFIX and $BIN" 7
  exec sudo -- "$0" "$@"
fi

command -v "$PY" >/dev/null 2>&1 || die "$PY not found; install it first (apt-get install python3)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "kata-npu needs Python >= 3.11; $PY is $("$PY" -V 2>&1)"

# Debian splits venv's pip bootstrap (ensurepip) into python3-venv / python3.X-venv.
if ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  ver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [ "$(id -u)" -eq 0 ]; then apt=""; elif command -v sudo >/dev/null 2>&1; then apt=sudo; else apt=none; fi
  command -v apt-get >/dev/null 2>&1 || apt=none
  [ "$apt" != none ] || die "Python's venv module is incomplete; install python3-venv (or python$ver-venv) as root, then re-run"
  echo "install.sh: installing python$ver-venv (Python's venv + ensurepip) with apt-get"
  $apt env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $apt env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "python$ver-venv" >/dev/null \
    || $apt env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  "$PY" -c 'import ensurepip, venv' || die "python3-venv installed but 'import ensurepip' still fails"
fi

if [ "$mode" = dev ]; then
  "$PY" -m venv "$SRC/.venv"
  "$SRC/.venv/bin/python" -m pip install -q --disable-pip-version-check -e "$SRC[test]"
  echo "install.sh: development venv $SRC/.venv (kata-npu editable, test extras); run tests with .venv/bin/python -m pytest"
  exit 0
fi

mkdir -p "$PREFIX" "$BIN"
"$PY" -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/python" -m pip install -q --disable-pip-version-check --root-user-action=ignore --upgrade "$SRC"
# Our own launchers over pip's console scripts (same paths): `python -IS`, the venv's import path
# written in, so no site, no foreign .pth file and no PYTHON* variable runs before kata-npu (faster
# start, nothing unchosen running as root). See src/kata_npu/launcher.py.
"$PREFIX/venv/bin/python" -I -m kata_npu.launcher "$PREFIX/venv/bin" >/dev/null \
  || die "could not write the launchers into $PREFIX/venv/bin"
for cmd in kata-npu kata-npu-hook; do
  [ -x "$PREFIX/venv/bin/$cmd" ] || die "pip did not install $PREFIX/venv/bin/$cmd"
  ln -sfn "$PREFIX/venv/bin/$cmd" "$BIN/.$cmd.tmp$$"
  mv -Tf "$BIN/.$cmd.tmp$$" "$BIN/$cmd"   # rename: a running unit never sees a missing command
done
echo "install.sh: kata-npu installed: $BIN/kata-npu -> $PREFIX/venv/bin/kata-npu (also $BIN/kata-npu-hook)"
