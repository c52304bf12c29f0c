#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs what exists of the suite on
# loopback.  Today that is the transport every service will share (libs/rpc): a real
# server and client over HTTP/2 on 127.0.0.1, measured against plain gRPC C core.
# It stops by itself; nothing is left running.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"${LLMSERVE_JOBS:-2}" --target llmserve-rpcbench llmserve-test-echo

echo
echo "== llmserve transport on loopback (libs/rpc vs plain gRPC C core, same run)"
./build/tools/llmserve-rpcbench --quick "$@"
