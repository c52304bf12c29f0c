#!/usr/bin/env bash
# Builds the suite's binaries (release with debug info): the services, the model maker,
# llmctl and llmbench.  tools/quickstart.sh and the container images
# (deploy/docker/Dockerfile, Dockerfile.cuda) build with it, so all three build alike.
#
#   bash tools/build.sh [--cuda ON|OFF] [DIR]
#
# DIR defaults to $LLMSERVE_BUILD_DIR or build.  CUDA is ON when /usr/local/cuda/bin/nvcc
# exists, unless --cuda says otherwise.  Parallel jobs: $LLMSERVE_JOBS (default 2).
# Run bash tools/install-deps.sh (or --build-only) first.
set -euo pipefail
cd "$(dirname "$0")/.."

cuda=OFF
[ -x /usr/local/cuda/bin/nvcc ] && cuda=ON
dir=${LLMSERVE_BUILD_DIR:-build}
while [ $# -gt 0 ]; do
  case "$1" in
    --cuda)
      case "${2:-}" in ON | OFF) cuda=$2 ;; *) echo "build: --cuda takes ON or OFF" >&2; exit 2 ;; esac
      shift 2
      ;;
    -*) echo "usage: bash tools/build.sh [--cuda ON|OFF] [DIR]" >&2; exit 2 ;;
    *) dir=$1; shift ;;
  esac
done

# The binaries the quickstart runs and the images ship (deploy/docker/Dockerfile copies
# them to /usr/local/bin).
targets=(llmserve-router llmserve-cache llmserve-inference llmserve-metrics
         llmserve-modelmaker llmctl llmbench)

echo "== build (release, CUDA $cuda)"
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLLMSERVE_CUDA=$cuda >/dev/null
cmake --build "$dir" -j"${LLMSERVE_JOBS:-2}" --target "${targets[@]}"
