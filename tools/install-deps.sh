#!/usr/bin/env bash
# Installs everything llmserve needs to build, test and run on Debian 12 (as root).
# Idempotent: when every package is present it does nothing, so it also works offline.
#
#   bash tools/install-deps.sh               everything: build, tests, the quickstart
#   bash tools/install-deps.sh --build-only  only what `bash tools/build.sh` needs (the
#                                            compilers, cmake and the -dev packages); the
#                                            container images' build stages use it
set -euo pipefail

build_packages=(
  build-essential cmake pkg-config git ca-certificates
  libgrpc-dev protobuf-c-compiler libprotobuf-c-dev protobuf-compiler
  libcriterion-dev python3
  libmemcached-dev libopenblas-dev libcurl4-openssl-dev libcjson-dev
  libssl-dev libmicrohttpd-dev
)

case "${1:-}" in
  "")
    packages=(
      build-essential cmake pkg-config git ca-certificates openssl procps
      libgrpc-dev protobuf-c-compiler libprotobuf-c-dev protobuf-compiler
      libcriterion-dev python3 python3-grpcio python3-protobuf
      memcached libmemcached-dev libopenblas-dev libcurl4-openssl-dev libcjson-dev
      libssl-dev valgrind
      libmicrohttpd-dev prometheus chromium
    )
    ;;
  --build-only) packages=("${build_packages[@]}") ;;
  *) echo "usage: bash tools/install-deps.sh [--build-only]" >&2; exit 2 ;;
esac

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages (${missing[*]}); run as root" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
