#!/bin/sh
# Try kata-npu without hardware: boots the real-kernel test VM and walks through list/groups/doctor/bind/unbind.
# Usage (as root, from anywhere): tests/e2e/demo.sh [--no-shell] [--no-iommu]
set -e
cd "$(dirname "$0")/../.."
# The venv `./install.sh --dev` makes (Debian 12's system python3 cannot pip install: PEP 668).
if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
exec "$py" -m tests.e2e.demo "$@"
