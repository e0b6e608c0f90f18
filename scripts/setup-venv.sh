#!/usr/bin/env bash
# Create the development virtualenv with the project, its test extras and the
# llama.cpp CPU backend. llama-cpp-python has no wheels on PyPI, so it is built
# once and the wheel is cached (per version, architecture and build flags).
set -euo pipefail

VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}
LLAMA_CPP_VERSION=0.3.36
CACHE_ROOT=${RKLLMD_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rkllmd/wheels}

say() { printf 'setup: %s\n' "$*" >&2; }

need_debian_packages() {
    local missing=()
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
    command -v g++ >/dev/null || missing+=(g++)
    command -v make >/dev/null || missing+=(make)
    command -v cmake >/dev/null || missing+=(cmake)
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        say "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        say "missing system packages: ${missing[*]}"
        say "install them with: sudo apt-get install ${missing[*]}"
        exit 1
    fi
}

llama_cmake_args() {
    # The default native build uses AVX-512/AMX kernels that crash on some x86
    # hosts during batched prompt evaluation; arm64 boards are fine as they are.
    if [ -n "${LLAMA_CMAKE_ARGS+set}" ]; then
        printf '%s' "$LLAMA_CMAKE_ARGS"
    elif [ "$(uname -m)" = x86_64 ]; then
        printf '%s' "-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF"
    fi
}

llama_wheel() {
    local args key dir
    args=$(llama_cmake_args)
    key=$(printf '%s|%s|%s' "$LLAMA_CPP_VERSION" "$(uname -m)" "$args" | sha256sum | cut -c1-12)
    dir="$CACHE_ROOT/llama-cpp-python-$LLAMA_CPP_VERSION-$key"
    if ! ls "$dir"/llama_cpp_python-*.whl >/dev/null 2>&1; then
        say "building llama-cpp-python $LLAMA_CPP_VERSION (about 5 minutes, once)"
        mkdir -p "$dir"
        CMAKE_ARGS="$args" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
            "$VENV/bin/pip" wheel --no-deps -q -w "$dir" "llama-cpp-python==$LLAMA_CPP_VERSION"
    fi
    ls "$dir"/llama_cpp_python-*.whl | head -n1
}

need_debian_packages
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { say "Python >= 3.11 required"; exit 1; }
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "$(llama_wheel)"
"$VENV/bin/pip" install -q -e '.[test]'
say "ready: $VENV"
