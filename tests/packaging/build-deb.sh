#!/usr/bin/env bash
# build-deb.sh OUTDIR: build the rkllmd .deb from a copy of the working tree (tracked
# and untracked-but-not-ignored files), so the tree gets no build/ or debian/rkllmd
# litter and dpkg-buildpackage writes its results into OUTDIR instead of "..".
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
SRC=$OUT/src/rkllmd

rm -rf "$OUT/src" && mkdir -p "$SRC"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
    | xargs -0 -I{} sh -c 'test -e "{}" && printf "%s\0" "{}"' \
    | tar --null -T - -cf -) | tar -C "$SRC" -xf -
rm -f "$OUT"/*.deb "$OUT"/*.buildinfo "$OUT"/*.changes
(cd "$SRC" && dpkg-buildpackage -us -uc -b) > "$OUT/build.log" 2>&1 \
    || { tail -40 "$OUT/build.log"; echo "build-deb: dpkg-buildpackage failed (log: $OUT/build.log)" >&2; exit 1; }
mv "$OUT"/src/*.deb "$OUT"/src/*.buildinfo "$OUT"/src/*.changes "$OUT"/
ls "$OUT"/rkllmd_*.deb
