#!/usr/bin/env bash
# Installs everything llmserve needs to build, test and run on Debian 12 (as root).
# Idempotent: when every package is present it does nothing, so it also works offline.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git ca-certificates openssl procps
  libgrpc-dev protobuf-c-compiler libprotobuf-c-dev protobuf-compiler
  libcriterion-dev python3 python3-grpcio python3-protobuf
  memcached libmemcached-dev libopenblas-dev libcurl4-openssl-dev libcjson-dev
  libssl-dev valgrind
  libmicrohttpd-dev prometheus chromium
)

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
