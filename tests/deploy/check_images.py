#!/usr/bin/env python3
"""Checks the container files (deploy/docker/Dockerfile, Dockerfile.cuda) against the
project and a real build, with no Docker engine:

- every FROM names a tag, and not `latest`; the CUDA file's bases are NVIDIA's CUDA images
  of the major version the build tree's binaries link (devel to build, runtime to run);
- the build stage installs with tools/install-deps.sh --build-only and builds with
  tools/build.sh (--cuda OFF, or ON for the CUDA file), and tools/quickstart.sh builds
  with the same two scripts; build.sh builds the seven binaries the images ship;
- the runtime stage ends as a non-root numeric user (10001:10001), names no ENTRYPOINT,
  and copies the binaries to /usr/local/bin under the names the Helm chart runs;
- the runtime packages cover the shared libraries the binaries of the build tree link:
  each library a binary needs (its DT_NEEDED, resolved with ldd) is mapped to its Debian
  package with `dpkg -S`, and that package must be in the stage's apt-get install list
  (Ubuntu 24.04's `t64` name for the CUDA file).  libc6 and libgcc-s1 come with every
  base; libraries under /usr/local/cuda must be among those NVIDIA's runtime image ships.
  A sanitizer build (--sanitize) links differently (libasan, libubsan, and every
  library of gRPC's closure, where the release build's linker keeps only those used):
  there the files and scripts are checked, and the libraries are left to the release
  build tree's run of this test, which is the build the images make.

usage: check_images.py --source DIR --build DIR [--sanitize]
"""
import argparse
import os
import re
import shlex
import subprocess
import sys

BINARIES = {  # name in /usr/local/bin -> path in the build tree
    "llmserve-router": "services/router/llmserve-router",
    "llmserve-cache": "services/cache/llmserve-cache",
    "llmserve-inference": "services/inference/llmserve-inference",
    "llmserve-metrics": "services/metrics/llmserve-metrics",
    "llmserve-modelmaker": "tools/modelmaker/llmserve-modelmaker",
    "llmctl": "tools/llmctl/llmctl",
    "llmbench": "tools/llmbench/llmbench",
}
IN_EVERY_BASE = {"libc6", "libgcc-s1"}  # Essential/required in Debian 12 and Ubuntu 24.04
CUDA_RUNTIME_LIBS = {"libcudart", "libcublas", "libcublasLt"}  # nvidia/cuda *-runtime-*

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg)


def instructions(path):
    """The Dockerfile's instructions as (KEYWORD, text), continuation lines joined."""
    out, cur = [], ""
    for line in open(path, encoding="utf-8"):
        s = line.rstrip("\n")
        if not s.strip() or s.lstrip().startswith("#"):
            continue  # Docker skips these, inside a continuation too
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        kw, _, rest = cur.strip().partition(" ")
        out.append((kw.upper(), rest.strip()))
        cur = ""
    return out


def stages(instrs):
    """[(from_text, [instructions])] one per FROM."""
    st = []
    for kw, text in instrs:
        if kw == "FROM":
            st.append((text, []))
        elif st:
            st[-1][1].append((kw, text))
    return st


def apt_install_list(stage):
    pkgs = set()
    for kw, text in stage:
        if kw != "RUN":
            continue
        for cmd in re.split(r"&&|;", text):
            words = shlex.split(cmd)
            if words[:2] == ["apt-get", "install"]:
                pkgs |= {w for w in words[2:] if not w.startswith("-")}
    return pkgs


def needed_libs(binary):
    """{soname: path} for the DT_NEEDED entries of binary, resolved by ldd."""
    dyn = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True, check=True).stdout
    needed = re.findall(r"\(NEEDED\).*\[(.+?)\]", dyn)
    ldd = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    where = {}
    for line in ldd.splitlines():
        m = re.match(r"\s*(\S+) => (\S+)", line)
        if m:
            where[m.group(1)] = m.group(2)
    out = {}
    for so in needed:
        if so not in where or where[so] == "not":
            fail(f"{binary}: {so} not found by ldd")
            continue
        out[so] = where[so]
    return out


def owning_packages(paths):
    """{path: Debian package that ships it (with or without the /usr merge)}; one dpkg -S."""
    cands = {}
    for path in paths:
        for p in (path, os.path.realpath(path)):
            for c in (p, p[4:] if p.startswith("/usr/") else "/usr" + p):
                cands.setdefault(c, set()).add(path)
    r = subprocess.run(["dpkg", "-S"] + sorted(cands), capture_output=True, text=True)
    out = {}
    for line in r.stdout.splitlines():
        pkg, sep, p = line.partition(": ")
        if sep and p in cands:
            for path in cands[p]:
                out.setdefault(path, pkg.split(":")[0].split(",")[0].strip())
    return out


def soname_stem(so):
    return so.split(".so")[0]


def check_file(src, name, cuda, libs_by_binary):
    path = os.path.join(src, "deploy/docker", name)
    if not os.path.isfile(path):
        fail(f"{name}: missing")
        return
    st = stages(instructions(path))
    if len(st) < 2:
        fail(f"{name}: expected a build stage and a runtime stage, found {len(st)} FROM")
        return
    build, runtime = st[0], st[-1]

    # Base images: a tag, not latest.
    for frm, _ in st:
        image = frm.split()[0]
        ref = image.split("@")[0]
        tag = ref.rsplit(":", 1)[1] if ":" in ref.rsplit("/", 1)[-1] else None
        if not tag:
            fail(f"{name}: FROM {image} has no tag")
        elif tag == "latest":
            fail(f"{name}: FROM {image} uses latest")
    bimg, rimg = build[0].split()[0], runtime[0].split()[0]
    if cuda:
        cuda_major = None
        for libs in libs_by_binary.values():
            for so, p in libs.items():
                if soname_stem(so) == "libcudart":
                    cuda_major = so.rsplit(".", 1)[1]
        m1 = re.fullmatch(r"nvidia/cuda:(\d+)\.\d+\.\d+-devel-ubuntu[\d.]+", bimg)
        m2 = re.fullmatch(r"nvidia/cuda:(\d+)\.\d+\.\d+-runtime-ubuntu[\d.]+", rimg)
        if not m1 or not m2:
            fail(f"{name}: bases must be nvidia/cuda X.Y.Z-devel and -runtime, found {bimg}, {rimg}")
        elif cuda_major and (m1.group(1) != cuda_major or m2.group(1) != cuda_major):
            fail(f"{name}: the binaries link CUDA {cuda_major} (libcudart.so.{cuda_major}); "
                 f"the bases are {bimg}, {rimg}")
        elif m1.group(0).split(":")[1].split("-")[0] != m2.group(0).split(":")[1].split("-")[0]:
            fail(f"{name}: devel and runtime bases are different CUDA versions")
    else:
        if not bimg.startswith("debian:12") or not rimg.startswith("debian:12"):
            fail(f"{name}: bases must be Debian 12, found {bimg}, {rimg}")

    # Build stage: the project's own scripts.
    runs = [t for k, t in build[1] if k == "RUN"]
    if not any(re.search(r"\bbash tools/install-deps\.sh --build-only\b", r) for r in runs):
        fail(f"{name}: the build stage does not run `bash tools/install-deps.sh --build-only`")
    want = f"bash tools/build.sh --cuda {'ON' if cuda else 'OFF'}"
    if not any(want in r for r in runs):
        fail(f"{name}: the build stage does not run `{want}`")

    # Runtime stage: user, entry point, binaries.
    users = [t for k, t in runtime[1] if k == "USER"]
    if not users:
        fail(f"{name}: the runtime stage sets no USER (it would run as root)")
    else:
        u = users[-1].split(":")
        if not u[0].isdigit() or int(u[0]) == 0 or (len(u) > 1 and (not u[1].isdigit() or int(u[1]) == 0)):
            fail(f"{name}: the runtime USER {users[-1]} is not a non-root numeric uid:gid")
        elif users[-1] != "10001:10001":
            fail(f"{name}: the runtime USER is {users[-1]}, the chart expects 10001:10001")
    if any(k == "ENTRYPOINT" for k, _ in runtime[1]):
        fail(f"{name}: the runtime stage sets an ENTRYPOINT; the chart's command names the binary")
    copies = [t for k, t in runtime[1] if k == "COPY"]
    if not any(re.fullmatch(r"--from=build\s+/out/?\s+/usr/local/bin/?", c) for c in copies):
        fail(f"{name}: the runtime stage does not copy /out/ from the build stage to /usr/local/bin/")
    build_run = " ".join(runs)
    for b, rel in BINARIES.items():
        if f"build/{rel}" not in build_run:
            fail(f"{name}: the build stage does not put build/{rel} in /out (as /usr/local/bin/{b})")

    # Runtime packages.
    listed = apt_install_list(runtime[1])
    pkgs = owning_packages({p for libs in libs_by_binary.values() for p in libs.values()})
    for b, libs in libs_by_binary.items():
        for so, p in sorted(libs.items()):
            stem = soname_stem(so)
            real = os.path.realpath(p)
            if real.startswith("/usr/local/cuda") or p.startswith("/usr/local/cuda"):
                if not cuda:
                    continue  # this image is built with --cuda OFF: nothing links CUDA
                if stem not in CUDA_RUNTIME_LIBS:
                    fail(f"{name}: {b} links {so}, which NVIDIA's runtime image does not ship")
                continue
            pkg = pkgs.get(p)
            if pkg is None:
                fail(f"{name}: {b} links {so} ({p}), which no Debian package ships")
                continue
            if pkg in IN_EVERY_BASE:
                continue
            ok = pkg in listed or (cuda and pkg + "t64" in listed)
            if not ok:
                fail(f"{name}: {b} links {so} from package {pkg}, not in the runtime stage's "
                     f"apt-get install list {sorted(listed)}")
    print(f"{name}: {len(st)} stages, bases {bimg} / {rimg}, runtime packages {sorted(listed)}")


def check_scripts(src):
    qs = open(os.path.join(src, "tools/quickstart.sh"), encoding="utf-8").read()
    for want in ("bash tools/install-deps.sh\n", 'bash tools/build.sh "$BUILD"'):
        if want not in qs:
            fail(f"tools/quickstart.sh does not run `{want.strip()}`: the images would not build as it does")
    if re.search(r"^\s*cmake ", qs, re.M):
        fail("tools/quickstart.sh runs cmake itself instead of tools/build.sh")
    bs = open(os.path.join(src, "tools/build.sh"), encoding="utf-8").read()
    if "-DCMAKE_BUILD_TYPE=RelWithDebInfo -DLLMSERVE_CUDA=$cuda" not in bs:
        fail("tools/build.sh does not configure RelWithDebInfo with -DLLMSERVE_CUDA")
    m = re.search(r"targets=\(([^)]*)\)", bs)
    targets = set(m.group(1).split()) if m else set()
    if targets != set(BINARIES):
        fail(f"tools/build.sh builds {sorted(targets)}, the images ship {sorted(BINARIES)}")
    deps = open(os.path.join(src, "tools/install-deps.sh"), encoding="utf-8").read()
    if "--build-only)" not in deps:
        fail("tools/install-deps.sh has no --build-only mode")
    if not os.path.isfile(os.path.join(src, ".dockerignore")):
        fail(".dockerignore missing at the repository root (the images' build context)")
    else:
        ign = open(os.path.join(src, ".dockerignore"), encoding="utf-8").read().split()
        for want in ("build", "build-*", ".git"):
            if want not in ign:
                fail(f".dockerignore does not leave out {want}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", required=True)
    ap.add_argument("--build", required=True)
    ap.add_argument("--sanitize", action="store_true",
                    help="a sanitizer build tree: its binaries link otherwise than the images'")
    a = ap.parse_args()
    libs_by_binary = {}
    for b, rel in BINARIES.items():
        p = os.path.join(a.build, rel)
        if not os.path.isfile(p):
            fail(f"{p}: not built (build the whole tree, or: bash tools/build.sh {a.build})")
            continue
        libs_by_binary[b] = {} if a.sanitize else needed_libs(p)
    if a.sanitize:
        print("sanitizer build tree: shared libraries not checked (the release tree's run checks them)")
    check_scripts(a.source)
    check_file(a.source, "Dockerfile", False, libs_by_binary)
    check_file(a.source, "Dockerfile.cuda", True, libs_by_binary)
    if failures:
        print(f"check_images: {len(failures)} failure(s)")
        return 1
    print("check_images: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
