#!/bin/sh
# Regenerates the checked-in stubs from api.proto and podresources.proto (grpcio-tools; run from anywhere).
# Run with the interpreter that has grpcio-tools, e.g. PYTHON=/work/venvs/plugin/bin/python ./gen.sh
set -eu
src="$(cd "$(dirname "$0")/../../.." && pwd)"   # .../src
cd "$src"
"${PYTHON:-python3}" -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. \
  kata_npu/deviceplugin/proto/api.proto kata_npu/deviceplugin/proto/podresources.proto
