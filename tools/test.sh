#!/usr/bin/env bash
# Runs every llmserve test: installs dependencies, builds (CUDA on when nvcc is present),
# runs the suite, then builds again with AddressSanitizer + UndefinedBehaviorSanitizer
# (LeakSanitizer included) and runs the suite again, and compiles a Release (-O3) build.
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/install-deps.sh

# One memcached on a loopback port for the whole run (tests that kill and restart
# memcached start their own); its address is in LLMSERVE_TEST_MEMCACHED.
mc_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
memcached -l 127.0.0.1 -p "$mc_port" -U 0 -u "$(id -un)" -m 64 &
mc_pid=$!
trap 'kill "$mc_pid" 2>/dev/null || true; wait "$mc_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$mc_port") 2>/dev/null && break; sleep 0.05; done
export LLMSERVE_TEST_MEMCACHED="127.0.0.1:$mc_port"
echo "== memcached for tests at $LLMSERVE_TEST_MEMCACHED"

cuda=OFF
[ -x /usr/local/cuda/bin/nvcc ] && cuda=ON
jobs=${LLMSERVE_JOBS:-2}

echo "== build (release, CUDA $cuda)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLLMSERVE_CUDA=$cuda >/dev/null
cmake --build build -j"$jobs"
echo "== tests"
(cd build && ctest --output-on-failure --timeout 600)

echo "== build (ASan + UBSan)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DLLMSERVE_CUDA=OFF -DLLMSERVE_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs"
echo "== tests under sanitizers"
(cd build-asan && ctest --output-on-failure --timeout 900)

# -O3 finds warnings (maybe-uninitialized) that -O2 does not, and users build Release:
# compile it too, warnings being errors.
echo "== build (Release, -O3; compile only)"
cmake -S . -B build-o3 -DCMAKE_BUILD_TYPE=Release -DLLMSERVE_CUDA=OFF >/dev/null
cmake --build build-o3 -j"$jobs"
