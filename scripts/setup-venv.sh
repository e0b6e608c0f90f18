#!/usr/bin/env bash
# Create the development virtualenv with the project, its test extras and the
# llama.cpp CPU backend, on $PYTHON (python3 by default; 3.11, 3.12 and 3.13 are
# tested). llama-cpp-python has no wheels on PyPI: scripts/llama-wheel.sh builds it
# once and caches it (one wheel for every Python version).
set -euo pipefail

VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)

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

# The web console's browser tests (tests/http/console) drive Debian's headless Chromium;
# without it they are skipped (saying so), so a missing browser never stops the setup.
want_browser() {
    command -v chromium >/dev/null && command -v chromedriver >/dev/null && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        say "installing chromium chromium-driver (the console's browser tests)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
            || say "could not install chromium: the console's browser tests will be skipped"
    else
        say "no chromium/chromedriver: the console's browser tests will be skipped"
        say "install them with: sudo apt-get install chromium chromium-driver"
    fi
}

minor() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])'; }

# pyenv's shims refuse a version that `pyenv global/local` did not select
# ("python3.12: command not found"): take that version's interpreter directly.
resolve_python() {
    "$PYTHON" -c '' 2>/dev/null && return 0
    command -v pyenv >/dev/null || return 0
    local found
    found=$(ls -d "$(pyenv root)"/versions/*/bin/"$PYTHON" 2>/dev/null | sort -V | tail -n1)
    [ -z "$found" ] || PYTHON=$found
}

resolve_python
"$PYTHON" -c '' 2>/dev/null || { say "no working interpreter $PYTHON"; exit 1; }
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { say "Python >= 3.11 required"; exit 1; }
need_debian_packages
want_browser
want=$(minor "$PYTHON")
if [ -x "$VENV/bin/python" ] && [ "$(minor "$VENV/bin/python" 2>/dev/null)" != "$want" ]; then
    say "$VENV was made with another Python: recreating it with $PYTHON ($want)"
    rm -rf "$VENV"
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "$(PYTHON=$PYTHON "$HERE/llama-wheel.sh")"
"$VENV/bin/pip" install -q -e '.[test]'
say "ready: $VENV (Python $want)"
