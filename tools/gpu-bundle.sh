#!/usr/bin/env bash
# tools/gpu-bundle.sh BUILD_DIR DEST - packs what tools/gpu-check.sh runs, for a GPU
# machine that has the NVIDIA driver and the CUDA toolkit but none of llmserve's build
# dependencies (gRPC, protobuf-c, criterion): the binaries, built here, and the shared
# libraries they need that are not glibc's and not CUDA's.
#
#   DEST/libexec/NAME   the binaries gpu-check.sh runs
#   DEST/bin/NAME       a wrapper for each: runs it with DEST/lib first on the library
#                       path, then the GPU machine's CUDA libraries (cuBLAS is far too
#                       large to carry); with the loader and C library carried in
#                       DEST/glibc when the machine's own are older than this one's
#   DEST/lib            the shared libraries (gRPC, abseil, OpenSSL, criterion, ...)
#                       plus libcudart, so the CUDA runtime is the one built against
#   DEST/glibc          this machine's loader, C, C++ and math libraries (fallback;
#                       the criterion tests cannot run that way, since they start
#                       themselves again through /proc/self/exe)
#   DEST/MANIFEST       what was built, from which commit, on which system
#
# Then, on the GPU machine: tools/gpu-check.sh --bundle DEST.  BUILD_DIR must be a
# build with LLMSERVE_CUDA=ON that has built every target gpu-check.sh names (or use
# --build to let this script build them).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: tools/gpu-bundle.sh [--build] BUILD_DIR DEST" >&2; exit 2; }
build=0
[ "${1:-}" = "--build" ] && { build=1; shift; }
[ $# -eq 2 ] || usage
bdir=$1 dest=$2

# What gpu-check.sh runs, by target name.
targets=(test_forward_cuda test_forward_cpu test_model_sampler test_inference_scheduler
         test_inference llmserve-inference llmserve-modelmaker llmserve-modelbench llmbench)

if [ "$build" = 1 ]; then
    cmake -S . -B "$bdir" -DCMAKE_BUILD_TYPE=Release -DLLMSERVE_CUDA=ON >/dev/null
    cmake --build "$bdir" -j"${LLMSERVE_JOBS:-2}" --target "${targets[@]}"
fi
[ -n "$(find "$bdir" -type f -name test_forward_cuda -perm -u+x 2>/dev/null)" ] ||
    { echo "gpu-bundle: $bdir has no test_forward_cuda: not a build with the CUDA backend" >&2; exit 1; }

rm -rf "$dest"
mkdir -p "$dest/bin" "$dest/libexec" "$dest/lib" "$dest/glibc"
for t in "${targets[@]}"; do
    f=$(find "$bdir" -type f -name "$t" -perm -u+x -not -path '*/CMakeFiles/*' | head -1)
    [ -n "$f" ] || { echo "gpu-bundle: $t is not built in $bdir" >&2; exit 1; }
    cp "$f" "$dest/libexec/$t"
    cat >"$dest/bin/$t" <<EOF
#!/usr/bin/env bash
# gpu-bundle wrapper (see tools/gpu-bundle.sh)
here=\$(cd "\$(dirname "\${BASH_SOURCE[0]}")/.." && pwd)
lp="\$here/lib\${LLMSERVE_GPU_CUDA_LIBS:+:\$LLMSERVE_GPU_CUDA_LIBS}"
if [ -e "\$here/use-glibc" ]; then
    exec "\$here/glibc/ld-linux-x86-64.so.2" --library-path "\$lp:\$here/glibc" "\$here/libexec/$t" "\$@"
fi
LD_LIBRARY_PATH="\$lp\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "\$here/libexec/$t" "\$@"
EOF
    chmod +x "$dest/bin/$t"
done

# The shared-library closure: glibc's own and the C++ runtime go to glibc/ (used only
# when the machine's are too old), CUDA's driver and cuBLAS stay behind, the rest to lib/.
ldd "$dest"/libexec/* | awk '/=> \//{print $1, $3}' | sort -u | while read -r name path; do
    case "$name" in
    libcuda.so* | libcublas.so* | libcublasLt.so*) ;;
    libc.so.* | libm.so.* | libpthread.so.* | libdl.so.* | librt.so.* | libresolv.so.* | \
        libstdc++.so.* | libgcc_s.so.*)
        cp -L "$path" "$dest/glibc/$name" ;;
    *) cp -L "$path" "$dest/lib/$name" ;;
    esac
done
loader=$(ldd "$dest/libexec/llmbench" | awk '/ld-linux/{print $1}')
cp -L "$loader" "$dest/glibc/ld-linux-x86-64.so.2"

{
    echo "commit $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
    echo "built on $(. /etc/os-release && echo "$PRETTY_NAME"), $(ldd --version | head -1)"
    echo "nvcc: $(/usr/local/cuda/bin/nvcc --version 2>/dev/null | tail -1)"
    echo "cuda code: $(grep -rhoE 'generate-code=arch=[a-z_0-9]+,code=\[[a-z_0-9,]+\]' \
        "$bdir/libs/model/CMakeFiles/llmserve_model.dir/flags.make" 2>/dev/null | sort -u | tr '\n' ' ')"
    echo "build type: $(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$bdir/CMakeCache.txt")"
} >"$dest/MANIFEST"
echo "gpu-bundle: $dest ($(du -sh "$dest" | cut -f1)): ${targets[*]}"
