#!/usr/bin/env bash
# Build llama.cpp's own HTTP server from the llama.cpp that llama-cpp-python
# vendors, so bench/engine.py compares rkllmd's engine with llama-server built
# from the very same sources and CPU flags as the wheel the daemon uses.
#
#   scripts/build-llama-server.sh            # prints the binary's path
#
# The binary is cached under ~/.cache/rkllmd/llama-server/<version>-<key>/ and
# reused on later calls. A build takes ~20 minutes on a busy 2-core machine;
# run it under `nice -n 10` when others share the machine.
set -euo pipefail

LLAMA_CPP_VERSION=${LLAMA_CPP_VERSION:-0.3.36}
CACHE_ROOT=${RKLLMD_LLAMA_SERVER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rkllmd/llama-server}
PYTHON=${PYTHON:-python3}

say() { printf 'build-llama-server: %s\n' "$*" >&2; }

cpu_flags() {
    # The same CPU flags as scripts/setup-venv.sh uses for the wheel: no
    # AVX-512/AMX kernels (they crash on some x86 hosts), AVX2+FMA+F16C on.
    if [ "$(uname -m)" = x86_64 ]; then
        printf '%s' "-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF"
    fi
}

# The server's web UI would be downloaded at configure time (PREBUILT_UI) and
# needs node to build otherwise; the bench only talks to the HTTP API. A static
# binary keeps the cache directory self-contained.
SERVER_FLAGS="-DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release"

key=$(printf '%s|%s|%s|%s' "$LLAMA_CPP_VERSION" "$(uname -m)" "$(cpu_flags)" "$SERVER_FLAGS" | sha256sum | cut -c1-12)
out="$CACHE_ROOT/$LLAMA_CPP_VERSION-$key"
if [ -x "$out/llama-server" ]; then
    printf '%s\n' "$out/llama-server"
    exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/llama-server-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
say "fetching the llama-cpp-python $LLAMA_CPP_VERSION sdist"
"$PYTHON" -m pip download -q --no-deps --no-binary :all: -d "$work" "llama-cpp-python==$LLAMA_CPP_VERSION"
tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
src=$(ls -d "$work"/llama_cpp_python-*/vendor/llama.cpp)

say "configuring (cmake) in $work/build"
# shellcheck disable=SC2046  # the flag lists are meant to split into words
cmake -S "$src" -B "$work/build" -G Ninja $(cpu_flags) $SERVER_FLAGS >"$work/configure.log"
say "building llama-server (about 20 minutes on 2 busy cores)"
cmake --build "$work/build" --target llama-server -j "$(nproc)" >"$work/build.log"

mkdir -p "$out"
install -m 0755 "$work/build/bin/llama-server" "$out/llama-server"
printf '%s\n' "$LLAMA_CPP_VERSION $(cpu_flags) $SERVER_FLAGS" >"$out/BUILD-FLAGS"
say "cached at $out"
printf '%s\n' "$out/llama-server"
