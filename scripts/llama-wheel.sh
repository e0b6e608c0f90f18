#!/usr/bin/env bash
# llama-wheel.sh [ARCH]: print the path of the llama-cpp-python wheel for ARCH
# (uname -m spelling; default: this machine), building it into the cache first when
# it is missing (about 5 minutes on 2 cores, once).
#
# The wheel carries llama.cpp's shared libraries and ctypes bindings only: it is
# tagged py3-none-linux_ARCH and serves every Python version (3.11, 3.12, 3.13),
# so the cache key is the llama-cpp-python version, the architecture and the CMake
# flags. A foreign ARCH (aarch64 on an x86_64 host) is cross-compiled with Debian's
# crossbuild-essential-arm64 compilers, which run natively.
#
# Used by scripts/setup-venv.sh (the developer venv), debian/rules (a native
# package build, e.g. on a board) and tests/packaging/build-deb.sh (container builds).
# Knobs: LLAMA_CMAKE_ARGS (replaces the default flags), RKLLMD_WHEEL_CACHE, PYTHON.
set -euo pipefail

LLAMA_CPP_VERSION=0.3.36
ARCH=${1:-$(uname -m)}
PYTHON=${PYTHON:-python3}
CACHE_ROOT=${RKLLMD_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rkllmd/wheels}

say() { printf 'llama-wheel: %s\n' "$*" >&2; }

cross=no
[ "$ARCH" = "$(uname -m)" ] || cross=yes

flags() {
    if [ -n "${LLAMA_CMAKE_ARGS+set}" ]; then
        printf '%s' "$LLAMA_CMAKE_ARGS"
    elif [ "$ARCH" = x86_64 ]; then
        # The default native build uses AVX-512/AMX kernels that crash on some x86
        # hosts during batched prompt evaluation.
        printf '%s' "-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF"
    elif [ "$cross" = yes ]; then
        # No -mcpu=native of the build host. Plain armv8-a runs on both the RK3588
        # (Cortex-A76/A55) and the RK3576 (A72/A53, which lack dotprod).
        printf '%s' "-DGGML_NATIVE=OFF"
    fi
    # A native build on the board keeps llama.cpp's default: tuned for that CPU.
}

toolchain() {  # CMake settings of a cross build for $ARCH
    local triplet=$ARCH-linux-gnu
    command -v "$triplet-g++" >/dev/null || {
        say "no $triplet-g++: apt-get install crossbuild-essential-$(deb_arch)"
        exit 1
    }
    printf '%s ' -DCMAKE_SYSTEM_NAME=Linux "-DCMAKE_SYSTEM_PROCESSOR=$ARCH" \
        "-DCMAKE_C_COMPILER=$triplet-gcc" "-DCMAKE_CXX_COMPILER=$triplet-g++" \
        "-DCMAKE_FIND_ROOT_PATH=/usr/$triplet" -DCMAKE_FIND_ROOT_PATH_MODE_PROGRAM=NEVER \
        -DCMAKE_FIND_ROOT_PATH_MODE_LIBRARY=ONLY -DCMAKE_FIND_ROOT_PATH_MODE_INCLUDE=ONLY \
        -DCMAKE_FIND_ROOT_PATH_MODE_PACKAGE=ONLY -DLLAMA_OPENSSL=OFF
}

deb_arch() {
    case $ARCH in aarch64) echo arm64 ;; x86_64) echo amd64 ;; *) echo "$ARCH" ;; esac
}

check_machine() {  # the wheel's libllama.so is an ELF file for $ARCH
    "$PYTHON" - "$1" "$ARCH" <<'PY'
import sys, zipfile
machines = {62: "x86_64", 183: "aarch64", 40: "arm"}
with zipfile.ZipFile(sys.argv[1]) as wheel:
    name = next(n for n in wheel.namelist() if n.endswith("/libllama.so"))
    header = wheel.open(name).read(20)
found = machines.get(int.from_bytes(header[18:20], "little"), "unknown")
if not sys.argv[2].startswith(found):
    sys.exit(f"llama-wheel: {name} in the built wheel is for {found}, not {sys.argv[2]}")
PY
}

build() {  # build the wheel into $1
    local out=$1 tmp args
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    args=$(flags)
    [ "$cross" = no ] || args="$args $(toolchain)"
    say "building llama-cpp-python $LLAMA_CPP_VERSION for $ARCH (about 5 minutes, once)"
    "$PYTHON" -m venv "$tmp/venv"
    "$tmp/venv/bin/pip" install -q --upgrade pip wheel
    # --no-cache-dir: pip's own wheel cache ignores CMAKE_ARGS and would hand back
    # a wheel built with other flags, or for another architecture.
    CMAKE_ARGS=$args CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) nice -n 10 \
        "$tmp/venv/bin/pip" wheel --no-cache-dir --no-deps -q -w "$tmp/out" \
        "llama-cpp-python==$LLAMA_CPP_VERSION" >&2
    if [ "$cross" = yes ]; then
        # The build frontend tags the wheel with the build host's platform.
        "$tmp/venv/bin/wheel" tags --remove --platform-tag "linux_$ARCH" "$tmp"/out/*.whl >/dev/null
    fi
    check_machine "$tmp"/out/*.whl
    mkdir -p "$out"
    mv "$tmp"/out/*.whl "$out"/
}

key=$(printf '%s|%s|%s' "$LLAMA_CPP_VERSION" "$ARCH" "$(flags)" | sha256sum | cut -c1-12)
dir=$CACHE_ROOT/llama-cpp-python-$LLAMA_CPP_VERSION-$key
ls "$dir"/llama_cpp_python-*.whl >/dev/null 2>&1 || build "$dir"
ls "$dir"/llama_cpp_python-*.whl | head -n1
