#!/usr/bin/env bash
# Runs every llmserve test: installs dependencies, builds (CUDA on when nvcc is present),
# runs the suite, then builds again with AddressSanitizer + UndefinedBehaviorSanitizer
# (LeakSanitizer included) and runs the suite again.  Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/install-deps.sh

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
