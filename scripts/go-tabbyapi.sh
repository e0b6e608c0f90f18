#!/usr/bin/env bash
# go-tabbyapi.sh: print the directory of TabbyAPI's Go client source
# (github.com/pixelsquared/go-tabbyapi) that tests/http/dialects/tabby/test_go_client.py
# builds its harness against, cloning it into the cache first when it is missing.
# The client is never part of this repository; GO_TABBYAPI_REPO names another clone
# source (a mirror, a local checkout). The test also needs a Go toolchain (Debian's
# golang-go, 1.19 or later).
set -euo pipefail

COMMIT=a08e4351e786d9c9a99e150f4e7ab66bffdc9663
REPO=${GO_TABBYAPI_REPO:-https://github.com/pixelsquared/go-tabbyapi}
CACHE_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/rkllmd
DEST=$CACHE_ROOT/go-tabbyapi-${COMMIT:0:12}

if [ ! -e "$DEST/.complete" ]; then
    printf 'fetching go-tabbyapi %s from %s into %s (once)\n' "${COMMIT:0:12}" "$REPO" "$DEST" >&2
    rm -rf "$DEST"
    mkdir -p "$CACHE_ROOT"
    git clone --quiet "$REPO" "$DEST"
    git -C "$DEST" checkout --quiet "$COMMIT"
    touch "$DEST/.complete"
fi
printf '%s\n' "$DEST"
