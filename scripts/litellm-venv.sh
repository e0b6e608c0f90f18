#!/usr/bin/env bash
# A private virtualenv with LiteLLM's proxy for tests/fleet/test_litellm.py (the
# documented alternative to HAProxy for model-aware routing). Kept out of the
# project's own venv: it brings ~100 packages the daemon does not need. Built once
# per version under the cache (about 2 minutes); prints the litellm executable.
set -euo pipefail

LITELLM_VERSION=1.108.7
PYTHON=${PYTHON:-python3}
CACHE_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/rkllmd
VENV=$CACHE_ROOT/litellm-$LITELLM_VERSION

# A venv cannot be moved (its scripts name their interpreter by path): build it in
# place and mark it complete last, so an interrupted build is started over.
if [ ! -e "$VENV/.complete" ]; then
    printf 'setup: installing litellm[proxy] %s into %s (once)\n' "$LITELLM_VERSION" "$VENV" >&2
    rm -rf "$VENV"
    mkdir -p "$CACHE_ROOT"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION" >&2
    touch "$VENV/.complete"
fi
printf '%s\n' "$VENV/bin/litellm"
