#!/bin/sh
# Try kata-npu without hardware: boots the real-kernel test VM and walks through list/groups/doctor/bind/unbind.
# Usage (as root, from anywhere): tests/e2e/demo.sh [--no-shell] [--no-iommu]
set -e
cd "$(dirname "$0")/../.."
exec python3 -m tests.e2e.demo "$@"
