#!/usr/bin/env bash
# build-deb.sh OUTDIR: build the rkllmd .deb for DIST (bookworm|trixie, default
# bookworm) and ARCH (default: the host's) in a container of that distribution and
# architecture, from a copy of the working tree (tracked and untracked-but-not-ignored
# files). Prints the .deb's path last. Needs root (chroot, mounts).
#
# The container is a debootstrap minbase with the Build-Depends (cached under
# ~/.cache/rkllmd), unpacked to a tmpfs, with the host's network: dh-virtualenv
# installs the Python dependencies from PyPI for the container's python3 and
# architecture. A foreign ARCH runs under qemu-user-static. The one native part
# built outside is llama.cpp (scripts/llama-wheel.sh on the host: cross-compiled for
# arm64, about 6 minutes once, instead of about an hour under emulation); its wheel
# is bind-mounted and dh-virtualenv installs it with the rest. The host must not
# have a newer glibc than DIST (it is checked): build on Debian 12, as CI does.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
DIST=${DIST:-bookworm}
ARCH=${ARCH:-$(dpkg --print-architecture)}
# shellcheck source=tests/packaging/rootfs.sh
. "$REPO/tests/packaging/rootfs.sh"

ROOT=$OUT/root
trap 'mountpoint -q "$ROOT" && umount -l "$ROOT"; true' EXIT
foreign_arch "$ARCH"
tarball=$(rootfs_tarball "$DIST" "$ARCH" "$(build_include "$ARCH")" rkbuild)
wheel=$("$REPO/scripts/llama-wheel.sh" "$(uname_arch "$ARCH")")
rootfs_unpack "$tarball" "$ROOT"

host_glibc=$(getconf GNU_LIBC_VERSION | awk '{print $2}')
dist_glibc=$(in_root "$ROOT" getconf GNU_LIBC_VERSION | awk '{print $2}')
if [ "$(printf '%s\n%s\n' "$host_glibc" "$dist_glibc" | sort -V | tail -1)" != "$dist_glibc" ]; then
    echo "build-deb: the host's glibc $host_glibc is newer than $DIST's $dist_glibc:" \
         "the llama.cpp wheel built here would not load there" >&2
    exit 1
fi

mkdir -p "$ROOT/build/rkllmd"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
    | xargs -0 -I{} sh -c 'test -e "{}" && printf "%s\0" "{}"' \
    | tar --null -T - -cf -) | tar -C "$ROOT/build/rkllmd" -xf -
rm -f "$OUT"/*.deb "$OUT"/*.buildinfo "$OUT"/*.changes
BIND_RO="$(dirname "$wheel"):/var/cache/rkllmd-wheel" \
    in_root "$ROOT" env RKLLMD_LLAMA_WHEELS=/var/cache/rkllmd-wheel \
    sh -c 'cd /build/rkllmd && dpkg-buildpackage -us -uc -b' > "$OUT/build.log" 2>&1 \
    || { tail -40 "$OUT/build.log"; echo "build-deb: dpkg-buildpackage failed (log: $OUT/build.log)" >&2; exit 1; }
mv "$ROOT"/build/*.deb "$ROOT"/build/*.buildinfo "$ROOT"/build/*.changes "$OUT"/
ls "$OUT"/rkllmd_*.deb
