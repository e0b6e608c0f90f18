# shellcheck shell=bash
# Debian root file systems for the package tests, sourced by build-deb.sh and run.sh.
#
# rootfs_tarball SUITE ARCH INCLUDE HOSTNAME: print the path of a cached zstd tarball
#   of a debootstrap minbase of SUITE for ARCH with the comma-separated INCLUDE
#   packages, bootstrapping it first when missing. Cache: $CACHE (~/.cache/rkllmd),
#   keyed by suite, architecture and package list.
# rootfs_unpack TARBALL DIR: unpack onto a fresh tmpfs mounted at DIR.
# in_root DIR CMD...: run CMD chrooted in DIR with /proc, /sys, /dev and the host's
#   DNS, in a private mount and pid namespace (nothing outlives it, nothing to
#   unmount); BIND_RO="host:inside ..." adds read-only bind mounts.
# foreign_arch ARCH: make the kernel run ARCH binaries with qemu-user-static.
#
# A foreign ARCH (arm64 on amd64) runs through binfmt_misc with the F flag: the kernel
# opens qemu when the handler is registered, so the emulator need not be inside the
# root file system, and chroot, systemd-nspawn and nsenter all just work.

CACHE=${RKLLMD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rkllmd}

apt_mirror() {  # the Debian mirror the host's apt uses
    local m
    m=$(grep -hs -E '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
            /etc/apt/sources.list.d/*.list 2>/dev/null \
        | grep -v -i security | grep -o -E 'https?://[^ ]*/debian/?' | head -1)
    echo "${m:-http://deb.debian.org/debian}"
}

uname_arch() {  # Debian architecture -> uname -m (and qemu/binfmt) name
    case $1 in arm64) echo aarch64 ;; amd64) echo x86_64 ;; armhf) echo arm ;; *) echo "$1" ;; esac
}

native_arch() { dpkg --print-architecture; }

# Packages of a build root: the Build-Depends (debhelper-compat is debhelper's), the
# compilers pip needs for a dependency without a wheel, and, in a root of the
# host's architecture, lintian (arch-independent: it checks the foreign .deb too).
build_include() {
    local include=build-essential,debhelper,dh-virtualenv,python3,python3-venv,python3-dev,cmake
    [ "$1" = "$(native_arch)" ] && include=$include,lintian
    echo "$include"
}

foreign_arch() {
    local arch=$1 name conf
    [ "$arch" = "$(native_arch)" ] && return 0
    name=$(uname_arch "$arch")
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || return 1
    fi
    if [ ! -e "/proc/sys/fs/binfmt_misc/qemu-$name" ]; then
        conf=/usr/lib/binfmt.d/qemu-$name.conf
        [ -f "$conf" ] || { echo "no $conf: apt-get install qemu-user-static" >&2; return 1; }
        cat "$conf" > /proc/sys/fs/binfmt_misc/register || return 1
    fi
    grep -q '^flags:.*F' "/proc/sys/fs/binfmt_misc/qemu-$name" \
        || { echo "qemu-$name is registered without the F flag" >&2; return 1; }
}

rootfs_tarball() {
    local suite=$1 arch=$2 include=$3 hostname=$4 key tarball tmp log
    key=$(printf '%s|%s|%s' "$suite" "$arch" "$include" | sha256sum | cut -c1-12)
    tarball=$CACHE/rootfs-$suite-$arch-$key.tar.zst
    log=$CACHE/rootfs-$suite-$arch-$key.log
    [ -f "$tarball" ] && { echo "$tarball"; return 0; }
    mkdir -p "$CACHE"
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/rkllmd-rootfs.XXXXXX")
    echo "debootstrap $suite $arch (cached as $tarball, log $log)" >&2
    # debootstrap lays down the minimal base; apt inside it then resolves the
    # packages (debootstrap's own --include gets the configure order of large
    # sets, such as lintian's Perl modules, wrong).
    if nice -n 10 debootstrap --variant=minbase --arch="$arch" "$suite" "$tmp/root" "$(apt_mirror)" \
            >"$log" 2>&1 \
        && in_root "$tmp/root" sh -c 'apt-get update -q && nice -n 10 apt-get install -y -q \
            --no-install-recommends "$@" && apt-get clean' sh ${include//,/ } >>"$log" 2>&1; then
        echo "$hostname" > "$tmp/root/etc/hostname"  # debootstrap copied the host's
        rm -f "$tmp"/root/var/cache/apt/*.bin "$tmp"/root/var/lib/apt/lists/*_Packages "$tmp/root/$HOST_CA"
        tar -C "$tmp/root" --numeric-owner --xattrs -cf - . | zstd -T0 -q -f -o "$tarball.tmp" \
            && mv "$tarball.tmp" "$tarball"
    else
        tail -20 "$log" >&2
    fi
    rm -rf "$tmp"
    [ -f "$tarball" ] && echo "$tarball"
}

rootfs_unpack() {
    local tarball=$1 dir=$2
    mountpoint -q "$dir" && umount -l "$dir"
    rm -rf "$dir" && mkdir -p "$dir"
    mount -t tmpfs -o size=6G,mode=0755 rkllmd-root "$dir"
    zstd -dc "$tarball" | tar -C "$dir" --numeric-owner --xattrs -xf -
}

HOST_CA=etc/rkllmd-host-ca.crt  # inside a root, from in_root

in_root() {
    local dir=$1
    shift
    # shellcheck disable=SC2016 # expanded by the inner shell
    HOST_CA=$HOST_CA unshare --mount --propagation private --pid --fork sh -c '
        root=$1; shift
        mount -t proc proc "$root/proc"
        mount -t sysfs sysfs "$root/sys"
        mount --rbind /dev "$root/dev"
        cp /etc/resolv.conf "$root/etc/resolv.conf"
        # pip trusts what the host trusts (a TLS-inspecting proxy CI may have).
        cp /etc/ssl/certs/ca-certificates.crt "$root/$HOST_CA" 2>/dev/null || : > "$root/$HOST_CA"
        for pair in $BIND_RO; do
            mkdir -p "$root/${pair#*:}"
            mount --bind "${pair%%:*}" "$root/${pair#*:}" && mount -o remount,bind,ro "$root/${pair#*:}"
        done
        [ -s "$root/$HOST_CA" ] && cert=PIP_CERT=/$HOST_CA || cert=NO_CERT=
        exec chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
            DEBIAN_FRONTEND=noninteractive "$cert" "$@"
    ' sh "$dir" "$@"
}
