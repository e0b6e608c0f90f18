#!/usr/bin/env bash
# make test-package [DIST=trixie], make test-arm64: build the .deb in a container of
# DIST (bookworm: Debian 12, python 3.11; trixie: Debian 13, python 3.13) and ARCH
# (default: the host's; arm64 runs under qemu-user-static), boot a DIST/ARCH minbase
# under systemd-nspawn (real systemd as PID 1), install the package there and check
# the service as an administrator would use it, including the RKLLM backend with the
# project's C double of librkllmrt compiled for ARCH. Prints one line per check and a
# closing "test-package: N passed, N failed, N skipped" line; exits 1 if any failed.
#
# Needs root (chroot, nspawn, nsenter, cgroups, binfmt_misc). As root it installs its
# own host packages; without root or nspawn support it prints why and exits 0.
#
# Knobs: DIST, ARCH, RKLLMD_PKGTEST_WORK (scratch, default /tmp/rkllmd-pkgtest-DIST-ARCH),
#        RKLLMD_CACHE (rootfs tarball cache, default ~/.cache/rkllmd),
#        RKLLMD_PKGTEST_DEB (test this .deb instead of building one),
#        RKLLMD_PKGTEST_KEEP=1 (leave the container running at the end).
set -uo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$REPO/tests/packaging
SUITE=${DIST:-bookworm}
NATIVE=$(dpkg --print-architecture 2>/dev/null || echo unknown)
ARCH=${ARCH:-$NATIVE}
WORK=${RKLLMD_PKGTEST_WORK:-/tmp/rkllmd-pkgtest-$SUITE-$ARCH}
MODEL_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_ID=SmolLM2-135M-Instruct.Q4_1
NPU_MODEL_ID=Qwen2.5-0.5B-Instruct_W8A8_RK3588
DOUBLE_DIR=/usr/local/lib/rkllm-double
# What the test itself uses inside the container, besides the package's Depends.
BASE_INCLUDE=systemd,systemd-sysv,dbus,python3,curl,procps
# Emulated CPUs are 5-20 times slower: deadlines grow, the checks stay the same.
SLOW=1
[ "$ARCH" = "$NATIVE" ] || SLOW=10

export NS_NAME=rk-$SUITE-$ARCH NS_ROOT=$WORK/root NS_STATE=$WORK/state
# shellcheck source=tests/packaging/nspawn.sh
. "$HERE/nspawn.sh"
# shellcheck source=tests/packaging/rootfs.sh
. "$HERE/rootfs.sh"

T0=$(date +%s.%N)
PASSED=0 FAILED=0 SKIPPED=0
FAILURES=()

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }
say() { printf '[%6ss] %s\n' "$(since "$T0")" "$*"; }
pass() { PASSED=$((PASSED + 1)); say "PASS  $1${2:+ ($2)}"; }
fail() { FAILED=$((FAILED + 1)); FAILURES+=("$1"); say "FAIL  $1${2:+: $2}"; }
skip() { SKIPPED=$((SKIPPED + 1)); say "SKIP  $1${2:+: $2}"; }

finish() {
    local code=0
    [ "$FAILED" -eq 0 ] || code=1
    say "total time $(since "$T0") s"
    [ "$FAILED" -eq 0 ] || printf '  failed: %s\n' "${FAILURES[@]}"
    echo "test-package: $PASSED passed, $FAILED failed, $SKIPPED skipped"
    exit "$code"
}

not_possible() {  # the machine cannot run nspawn at all: say so and do not fail
    say "SKIPPED: $*"
    echo "test-package: 0 passed, 0 failed, 1 skipped"
    exit 0
}

cleanup() {
    if [ "${RKLLMD_PKGTEST_KEEP:-0}" = 1 ] && [ -s "$NS_STATE/leader.pid" ]; then
        say "container kept: nsenter -t $(cat "$NS_STATE/leader.pid") -a bash"
        return
    fi
    [ -s "$NS_STATE/nspawn.pid" ] && ns_stop
    mountpoint -q "$NS_ROOT" && umount -l "$NS_ROOT"
    mountpoint -q "$WORK/lintroot" && umount -l "$WORK/lintroot"
    return 0
}

# c CMD...: run in the container; output to stdout.
c() { ns_exec "$@"; }
# as USER CMD...: run as USER (with USER's supplementary groups) in the container.
as() { local u=$1; shift; ns_exec setpriv --reuid="$u" --regid="$u" --init-groups env HOME=/tmp "$@"; }
# json EXPR: evaluate a Python expression on the JSON document on stdin (as "d").
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
show() { c systemctl show -p "$1" --value "${2:-rkllmd.service}"; }
# deadline N: N seconds, times the emulation factor.
deadline() { echo $(($1 * SLOW)); }

# ---------------------------------------------------------------- preflight
[ "$(uname -s)" = Linux ] || not_possible "systemd-nspawn needs Linux"
[ "$(id -u)" -eq 0 ] || not_possible "needs root for chroot, systemd-nspawn, nsenter and cgroups (run: sudo make test-package)"
[ -d /sys/fs/cgroup ] || not_possible "no cgroup file system at /sys/fs/cgroup"
case $SUITE in bookworm | trixie) ;; *) not_possible "DIST=$SUITE: bookworm or trixie are tested" ;; esac

host_deps() {
    local need=()
    command -v debootstrap >/dev/null || need+=(debootstrap)
    command -v systemd-nspawn >/dev/null || need+=(systemd-container)
    command -v zstd >/dev/null || need+=(zstd)
    command -v cmake >/dev/null || need+=(cmake)
    command -v g++ >/dev/null || need+=(g++)
    python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
    if [ "$ARCH" != "$NATIVE" ]; then
        [ -f "/usr/lib/binfmt.d/qemu-$(uname_arch "$ARCH").conf" ] || need+=(qemu-user-static)
        command -v "$(uname_arch "$ARCH")-linux-gnu-g++" >/dev/null || need+=("crossbuild-essential-$ARCH")
    fi
    [ ${#need[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || not_possible "missing ${need[*]} and no apt-get to install them"
    say "installing host packages: ${need[*]}"
    apt-get update -qq >/dev/null 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" \
        >"$WORK/apt.log" 2>&1 || { tail -20 "$WORK/apt.log"; return 1; }
}

mkdir -p "$WORK" "$CACHE"
t=$(now)
host_deps || not_possible "could not install the host packages (see $WORK/apt.log)"
command -v systemd-nspawn >/dev/null || not_possible "systemd-nspawn is not available"
if [ "$ARCH" != "$NATIVE" ]; then
    foreign_arch "$ARCH" || not_possible "cannot run $ARCH binaries through binfmt_misc and qemu"
fi
say "host packages ready in $(since "$t") s ($SUITE, $ARCH$([ "$SLOW" = 1 ] || echo ", emulated"))"
[ -f "$REPO/models/$MODEL_FILE" ] || { fail "model" "models/$MODEL_FILE missing: run make models"; finish; }
trap cleanup EXIT

# ---------------------------------------------------------------- build + lint
if [ -n "${RKLLMD_PKGTEST_DEB:-}" ]; then
    DEB=$RKLLMD_PKGTEST_DEB
    say "testing the given package $DEB"
else
    t=$(now)
    if DEB=$(DIST=$SUITE ARCH=$ARCH "$HERE/build-deb.sh" "$WORK/out" | tail -1) && [ -f "$DEB" ]; then
        pass "dpkg-buildpackage -us -uc -b in a $SUITE/$ARCH container" "$(since "$t") s, $(du -h "$DEB" | cut -f1)"
    else
        fail "dpkg-buildpackage -us -uc -b in a $SUITE/$ARCH container" "see $WORK/out/build.log"
        finish
    fi
fi
python_dep=$(dpkg-deb -f "$DEB" Depends | tr ',' '\n' | grep -o 'python3 ([^)]*)' | paste -sd' ')
pkg_arch=$(dpkg-deb -f "$DEB" Architecture)
if [ "$pkg_arch" = "$ARCH" ] && [[ "$python_dep" =~ ^python3\ \(\>=\ 3\.([0-9]+)\)\ python3\ \(\<\<\ 3\.([0-9]+)\)$ ]] \
        && [ $((BASH_REMATCH[1] + 1)) = "${BASH_REMATCH[2]}" ]; then
    pass "Architecture: $pkg_arch, Depends: $python_dep"
else
    fail "package metadata" "Architecture: $pkg_arch, python dependency '$python_dep'"
fi

# lintian is architecture-independent: it runs in the host-architecture build root
# of the same distribution (its own lintian version) instead of under emulation.
t=$(now)
if lint_tar=$(rootfs_tarball "$SUITE" "$NATIVE" "$(build_include "$NATIVE")" rkbuild) \
        && rootfs_unpack "$lint_tar" "$WORK/lintroot" && cp "$DEB" "$WORK/lintroot/tmp/" \
        && in_root "$WORK/lintroot" lintian --fail-on error "/tmp/$(basename "$DEB")" >"$WORK/lintian.log" 2>&1; then
    pass "lintian ($SUITE): no errors" "$(grep -c '^W:' "$WORK/lintian.log") warnings, $(since "$t") s"
else
    fail "lintian ($SUITE): no errors" "$(grep -E '^E:' "$WORK/lintian.log" | head -5 | tr '\n' ' ')"
fi
mountpoint -q "$WORK/lintroot" && umount -l "$WORK/lintroot"

# The C double of librkllmrt, for both ABIs, compiled for the container's CPU.
CC=gcc
[ "$ARCH" = "$NATIVE" ] || CC=$(uname_arch "$ARCH")-linux-gnu-gcc
double() {  # ABI VERSION OUT
    mkdir -p "$(dirname "$3")"
    $CC -shared -fPIC -O2 -Wall -Wextra -Werror -DRKLLM_ABI="$1" -DRKLLM_DOUBLE_VERSION="\"$2\"" \
        -o "$3" "$REPO/tests/fixtures/rkllm_double.c" -lpthread
}
if double 13 1.3.0 "$WORK/double/librkllmrt.so" && double 12 1.2.3 "$WORK/double/abi12/librkllmrt.so"; then
    pass "RKLLM test double built with $CC" "$(file -b "$WORK/double/librkllmrt.so" | cut -d, -f1-2)"
else
    fail "RKLLM test double built with $CC"
fi

# ---------------------------------------------------------------- rootfs
# The package's Depends are installed at debootstrap time: the container has no network.
DEPENDS=$(dpkg-deb -f "$DEB" Depends | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/[[:space:]]//g' | grep -v '^$')
INCLUDE=$(printf '%s\n' ${BASE_INCLUDE//,/ } $DEPENDS | sort -u | paste -sd, -)

t=$(now)
if ! TARBALL=$(rootfs_tarball "$SUITE" "$ARCH" "$INCLUDE" rkpkg); then
    fail "debootstrap $SUITE $ARCH rootfs"
    finish
fi
# A container left running by RKLLMD_PKGTEST_KEEP=1 goes first.
[ -s "$NS_STATE/nspawn.pid" ] && kill -0 "$(cat "$NS_STATE/nspawn.pid")" 2>/dev/null && ns_stop
rootfs_unpack "$TARBALL" "$NS_ROOT"
mkdir -p "$NS_ROOT/var/tmp/rkpkg" "$NS_ROOT$DOUBLE_DIR"
cp "$DEB" "$NS_ROOT/var/tmp/rkpkg/rkllmd.deb"
cp "$REPO/models/$MODEL_FILE" "$HERE/rkllm_layout.py" "$HERE/chat_speed.py" "$NS_ROOT/var/tmp/rkpkg/"
cp -r "$WORK/double/." "$NS_ROOT$DOUBLE_DIR/"
if [ "$SLOW" != 1 ]; then
    # An emulated start-up (python imports under qemu) can outlast the unit's 120 s.
    mkdir -p "$NS_ROOT/etc/systemd/system/rkllmd.service.d"
    printf '[Service]\nTimeoutStartSec=%s\n' "$(deadline 120)" \
        > "$NS_ROOT/etc/systemd/system/rkllmd.service.d/emulation.conf"
fi
say "rootfs ready on tmpfs in $(since "$t") s"

t=$(now)
if ns_boot "$(deadline 90)"; then
    pass "boot $SUITE/$ARCH under systemd-nspawn" "$(since "$t") s, systemd $(c systemctl --version | awk 'NR==1{print $2}')"
else
    fail "boot $SUITE/$ARCH under systemd-nspawn" "console: $NS_STATE/console.log"
    finish
fi

# ---------------------------------------------------------------- install
t=$(now)
if c env DEBIAN_FRONTEND=noninteractive dpkg -i /var/tmp/rkpkg/rkllmd.deb >"$WORK/dpkg-i.log" 2>&1; then
    pass "dpkg -i (postinst starts the service)" "$(since "$t") s"
else
    cat "$WORK/dpkg-i.log"
    fail "dpkg -i" "see $WORK/dpkg-i.log"
    finish
fi

# Right after dpkg returns: Type=notify start only returns after READY=1, so the
# unit must already be active, with the daemon's own STATUS= text.
state=$(c systemctl is-active rkllmd.service)
status_text=$(show StatusText)
if [ "$state" = active ] && [ -n "$status_text" ]; then
    pass "rkllmd.service active after postinst, READY received" "STATUS=$status_text"
else
    fail "rkllmd.service active after postinst" "is-active=$state StatusText='$status_text'"
    c journalctl -u rkllmd --no-pager -n 40
fi

if out=$(c /usr/lib/rkllmd/bin/python - < "$HERE/import_all.py" 2>&1); then
    pass "bundled venv: every compiled module imports" "$out"
else
    fail "bundled venv imports" "$out"
fi

sock_state=$(c systemctl is-active rkllmd.socket)
perms=$(c stat -c '%A %G' /run/rkllmd/control.sock 2>&1)
if [ "$sock_state" = active ] && [ "$perms" = "srw-rw---- rkllm" ]; then
    pass "rkllmd.socket active, control.sock $perms"
else
    fail "rkllmd.socket" "is-active=$sock_state control.sock: $perms"
fi

# How the daemon runs: user, groups, watchdog, config, sockets from systemd.
main_pid=$(show MainPID)
user=$(c ps -o user= -p "${main_pid:-0}" 2>/dev/null | tr -d ' ')
groups=$(c sh -c "grep Groups: /proc/${main_pid:-0}/status" 2>/dev/null)
render_gid=$(c getent group render | cut -d: -f3)
wd=$(show WatchdogUSec)
if [ "$user" = rkllm ] && [ -n "$render_gid" ] && echo "$groups" | grep -qw "$render_gid" && [ "$wd" = 30s ]; then
    pass "runs as rkllm with render/video groups, WatchdogUSec=$wd"
else
    fail "service identity" "user=$user render=$render_gid groups=$groups watchdog=$wd"
fi
if c journalctl -u rkllmd --no-pager -o cat | grep -q "inherited control socket"; then
    pass "daemon took the control socket from rkllmd.socket (LISTEN_FDS)"
else
    fail "socket activation" "no 'inherited control socket' line in the journal"
fi

if out=$(c sh < "$REPO/debian/tests/smoke" 2>&1); then
    pass "autopkgtest smoke (debian/tests/smoke)"
else
    fail "autopkgtest smoke" "$(echo "$out" | tail -3 | tr '\n' ' ')"
fi

verify=$(c systemd-analyze verify rkllmd.service rkllmd.socket rkllmd-performance.service 2>&1)
if [ -z "$verify" ]; then
    pass "systemd-analyze verify: clean"
else
    fail "systemd-analyze verify" "$verify"
fi
exposure=$(c systemd-analyze security rkllmd.service 2>/dev/null | sed -n 's/.*Overall exposure level for rkllmd.service: \([0-9.]*\).*/\1/p')
if [ -n "$exposure" ] && awk -v e="$exposure" 'BEGIN{exit !(e <= 2.5)}'; then
    pass "systemd-analyze security: exposure $exposure <= 2.5"
else
    fail "systemd-analyze security" "exposure '$exposure' > 2.5"
fi

# ---------------------------------------------------------------- access control
c useradd -m -G rkllm alice && c useradd -m bob
if out=$(as alice rkllmctl status 2>&1); then
    pass "rkllmctl status as alice (in group rkllm)"
else
    fail "rkllmctl status as alice (in group rkllm)" "$out"
fi
out=$(as bob rkllmctl status 2>&1); rc=$?
if [ "$rc" -eq 3 ] && echo "$out" | grep -qi "permission denied"; then
    pass "rkllmctl status as bob (not in rkllm) refused" "rc=3: $out"
else
    fail "rkllmctl status as bob refused" "rc=$rc: $out"
fi

# ---------------------------------------------------------------- models
mode=$(c stat -c '%a %U %G' /var/lib/rkllmd/models)
if [ "$mode" = "3770 rkllm rkllm" ]; then
    pass "models dir setgid and sticky: $mode"
else
    fail "models dir mode" "$mode (want 3770 rkllm rkllm)"
fi
# listed: seconds until `rkllmctl ls` shows $1, within $2 s; empty when it never did.
listed() {
    local t0 started
    started=$(now)
    while t0=$(now) && awk -v a="$started" -v b="$t0" -v m="$2" 'BEGIN{exit !(b - a < m)}'; do
        if as alice rkllmctl --json ls 2>/dev/null | grep -q "\"$1\""; then since "$started"; return; fi
        sleep 0.05
    done
}
c cp "/var/tmp/rkpkg/$MODEL_FILE" "/var/lib/rkllmd/models/$MODEL_FILE"
if as alice mv "/var/lib/rkllmd/models/$MODEL_FILE" /var/lib/rkllmd/models/moved.gguf 2>/dev/null; then
    fail "sticky models dir" "alice (rkllm) could rename a file she does not own"
    c mv /var/lib/rkllmd/models/moved.gguf "/var/lib/rkllmd/models/$MODEL_FILE"
else
    pass "sticky models dir: alice (rkllm) cannot rename another user's model"
fi
limit=$(deadline 2)
seen=$(listed "$MODEL_ID" $((limit + 3)))
if [ -n "$seen" ] && awk -v s="$seen" -v m="$limit" 'BEGIN{exit !(s <= m)}'; then
    pass "copied GGUF listed" "after $seen s"
else
    fail "copied GGUF listed within $limit s" "after ${seen:-more than $((limit + 3))} s"
fi

t=$(now)
if out=$(as alice rkllmctl load smollm2 2>&1) \
        && [ "$(as alice rkllmctl --json status | json 'd["state"], d["model"]')" = "ready $MODEL_ID" ]; then
    pass "rkllmctl load" "$(since "$t") s"
else
    fail "rkllmctl load" "$out"
fi

# ---------------------------------------------------------------- HTTP
t=$(now)
body="{\"model\": \"$MODEL_ID\", \"messages\": [{\"role\": \"user\", \"content\": \"Say hello\"}], \"max_tokens\": 16, \"temperature\": 0}"
out=$(c curl -sS --max-time "$(deadline 120)" -H 'Content-Type: application/json' -d "$body" \
        http://127.0.0.1:8080/v1/chat/completions 2>&1)
if content=$(echo "$out" | json 'd["choices"][0]["message"]["content"]' 2>/dev/null) && [ -n "$content" ]; then
    pass "curl POST /v1/chat/completions on 127.0.0.1:8080 (SmolLM2, llama.cpp)" "$(since "$t") s: ${content:0:40}"
else
    fail "curl POST /v1/chat/completions" "${out:0:300}"
fi
# Figures, not a check of speed: a streamed 64-token generation, timed inside the container.
if out=$(c python3 /var/tmp/rkpkg/chat_speed.py "$MODEL_ID" 64 2>&1); then
    pass "streamed chat figures (SmolLM2 on $ARCH)" "$out"
else
    fail "streamed chat (SmolLM2)" "$out"
fi

# ---------------------------------------------------------------- reload
before=$(as alice rkllmctl --json status | json 'd["state"], d["model"], d["worker_pid"]')
pid_before=$(show MainPID)
t=$(now)
if c systemctl reload rkllmd.service; then
    after=$(as alice rkllmctl --json status | json 'd["state"], d["model"], d["worker_pid"]')
    if [ "$after" = "$before" ] && [[ "$after" =~ ^ready\ $MODEL_ID\ [0-9]+$ ]] \
            && [ "$(show MainPID)" = "$pid_before" ] \
            && [ "$(c systemctl is-active rkllmd.service)" = active ]; then
        pass "systemctl reload keeps the model and its worker" "$after, $(since "$t") s"
    else
        fail "systemctl reload keeps the model" "before '$before' after '$after'"
    fi
else
    fail "systemctl reload" "rc=$?"
fi

# ---------------------------------------------------------------- worker crash
worker=$(as alice rkllmctl --json status | json 'd["worker_pid"]')
main_pid=$(show MainPID)
[[ "$worker" =~ ^[0-9]+$ ]] && c kill -SEGV "$worker"
for _ in $(seq $((20 * SLOW))); do
    [ "$(as alice rkllmctl --json status 2>/dev/null | json 'd.get("worker_pid")' 2>/dev/null)" = "$worker" ] || break
    sleep 0.1
done
sleep 1
state=$(c systemctl is-active rkllmd.service)
if [[ "$worker" =~ ^[0-9]+$ ]] && [ "$state" = active ] && [ "$(show MainPID)" = "$main_pid" ] && [ "$(show NRestarts)" = 0 ] \
        && ! c kill -0 "$worker" 2>/dev/null && as alice rkllmctl status >/dev/null; then
    pass "kill -SEGV of the worker: service stays active, daemon answers" \
        "state $(as alice rkllmctl --json status | json 'd["state"]')"
else
    fail "kill -SEGV of the worker" "worker=$worker is-active=$state NRestarts=$(show NRestarts)"
fi

# ---------------------------------------------------------------- restarts
inode=$(c stat -c %i /run/rkllmd/control.sock)
old_pid=$(show MainPID)
t=$(now)
c systemctl restart --no-block rkllmd.service
# This client connects while the old daemon drains or before the new one listens:
# it waits in the backlog of the socket systemd holds, and must get an answer.
if out=$(as alice rkllmctl --timeout "$(deadline 60)" status 2>&1) && c systemctl is-active --quiet rkllmd.service \
        && [ "$(show MainPID)" != "$old_pid" ] && [ "$(c stat -c %i /run/rkllmd/control.sock)" = "$inode" ]; then
    pass "systemctl restart: client during the restart answered, same socket" "$(since "$t") s"
else
    fail "systemctl restart with a waiting client" "$out"
fi

c systemctl stop rkllmd.service
if [ "$(c systemctl is-active rkllmd.service)" != active ] && [ "$(c systemctl is-active rkllmd.socket)" = active ]; then
    t=$(now)
    if out=$(as alice rkllmctl --timeout "$(deadline 60)" status 2>&1) && c systemctl is-active --quiet rkllmd.service; then
        pass "stopped service started again by a client on rkllmd.socket" "$(since "$t") s"
    else
        fail "socket activation of a stopped service" "$out"
    fi
else
    fail "socket activation" "service did not stop or socket not active"
fi

# ---------------------------------------------------------------- RKLLM backend
# The ctypes binding's layouts on this CPU: the daemon's own size check against
# rkllm.h's table (aarch64/armhf) and the C compiler's sizes and offsets for ARCH.
case $ARCH in arm64) host_abi=aarch64 ;; armhf) host_abi=armhf ;; *) host_abi=$(uname_arch "$ARCH")/lp64 ;; esac
if out=$(c /usr/lib/rkllmd/bin/python /var/tmp/rkpkg/rkllm_layout.py \
            "$DOUBLE_DIR/librkllmrt.so" "$DOUBLE_DIR/abi12/librkllmrt.so" 2>&1) \
        && [ "$(grep -c " on $host_abi: " <<<"$out")" = 2 ]; then
    pass "RKLLM 1.3 and 1.2 struct layouts: binding = rkllm.h = C compiler on $host_abi" \
        "$(grep -o '[0-9]* offsets' <<<"$out" | paste -sd/) checked"
else
    fail "RKLLM struct layouts on $host_abi" "$out"
fi

# The double where rkllm.library points, set in the conffile by the administrator.
c sed -i "s|^# library = .*|library = \"$DOUBLE_DIR/librkllmrt.so\"|" /etc/rkllmd/rkllmd.toml
c systemctl reload rkllmd.service
as alice sh -c "printf 'RKLLM-DOUBLE 1\nmax_context_limit=4096\nnpu_core_num=3\ntarget_platform=RK3588\nmodel_dtype=W8A8\ntoolkit_version=1.3.0\nembd_size=64\n' \
    > /var/lib/rkllmd/models/$NPU_MODEL_ID.rkllm"
seen=$(listed "$NPU_MODEL_ID" "$(deadline 5)")
t=$(now)
if [ -n "$seen" ] && out=$(as alice rkllmctl load "$NPU_MODEL_ID" 2>&1) \
        && runtime=$(as alice rkllmctl --json show "$NPU_MODEL_ID" \
            | json 'd["props"]["runtime"]["library"], d["props"]["runtime"]["version"], d["props"]["runtime"]["host_abi"]') \
        && [ "$runtime" = "$DOUBLE_DIR/librkllmrt.so 1.3.0 $host_abi" ]; then
    pass "rkllmctl load of a .rkllm model on the runtime from rkllm.library" "$(since "$t") s: $runtime"
else
    fail "rkllmctl load of a .rkllm model" "listed=${seen:-no} ${out:-} ${runtime:-}"
fi
t=$(now)
said="Grüße aus $ARCH"
body="{\"model\": \"$NPU_MODEL_ID\", \"messages\": [{\"role\": \"user\", \"content\": \"[[say:$said]]\"}]}"
out=$(c curl -sS --max-time "$(deadline 60)" -H 'Content-Type: application/json' -d "$body" \
        http://127.0.0.1:8080/v1/chat/completions 2>&1)
if [ "$(echo "$out" | json 'd["choices"][0]["message"]["content"]' 2>/dev/null)" = "$said" ]; then
    pass "chat through the RKLLM backend (C double on $host_abi)" "$(since "$t") s: $said"
else
    fail "chat through the RKLLM backend" "${out:0:300}"
fi

# ---------------------------------------------------------------- doctor
as alice rkllmctl doctor >"$WORK/doctor.txt" 2>&1
doctor_rc=$?
doctor=$(as alice rkllmctl --json doctor 2>/dev/null)
sed 's/^/      | /' "$WORK/doctor.txt"
statuses=$(echo "$doctor" | json '" ".join(c["name"].replace(" ", "_") + "=" + c["status"] for c in d["checks"])')
expected_rc=0
[[ " $statuses " == *=fail* ]] && expected_rc=1
if [[ " $statuses " == *" python=ok "* && " $statuses " == *" daemon=ok "* && " $statuses " == *" librkllmrt=ok "* ]] \
        && grep -q "RKLLM runtime 1.3.0" "$WORK/doctor.txt" && grep -q "via rkllm.library" "$WORK/doctor.txt" \
        && [ "$doctor_rc" = "$expected_rc" ]; then
    pass "rkllmctl doctor: python, daemon and librkllmrt ok, exit $doctor_rc" "$statuses"
else
    fail "rkllmctl doctor" "rc=$doctor_rc $statuses"
fi

# ---------------------------------------------------------------- stop, journal
t=$(now)
c systemctl stop rkllmd.service
result=$(show Result) code=$(show ExecMainStatus)
if [ "$result" = success ] && [ "$code" = 0 ]; then
    pass "systemctl stop: Result=success, exit status 0" "$(since "$t") s"
else
    fail "systemctl stop" "Result=$result ExecMainStatus=$code"
fi

journal=$(c journalctl -u rkllmd.service --no-pager -o cat)
if echo "$journal" | grep -q "ready; control socket" && echo "$journal" | grep -qE "called by pid [0-9]+ uid [0-9]+"; then
    pass "journal: startup and peer-credential lines" \
        "$(echo "$journal" | grep -m1 -oE "[a-z]+ called by pid [0-9]+ uid [0-9]+")"
else
    fail "journal lines" "$(echo "$journal" | tail -5 | tr '\n' '|')"
fi

# ---------------------------------------------------------------- upgrade path
t=$(now)
if c env DEBIAN_FRONTEND=noninteractive dpkg -i /var/tmp/rkpkg/rkllmd.deb >"$WORK/dpkg-reinstall.log" 2>&1 \
        && [ "$(c systemctl is-active rkllmd.service rkllmd.socket | sort -u)" = active ] \
        && as alice rkllmctl --json ls | grep -q "\"$MODEL_ID\""; then
    pass "dpkg -i over the installed package: units restarted, models kept" "$(since "$t") s"
else
    fail "reinstall (upgrade path)" "see $WORK/dpkg-reinstall.log"
fi

# ---------------------------------------------------------------- purge
t=$(now)
if c dpkg --purge rkllmd >"$WORK/dpkg-purge.log" 2>&1; then
    left=$(c sh -c 'ls -d /lib/systemd/system/rkllmd* /etc/systemd/system/*/rkllmd* /var/lib/rkllmd \
                      /run/rkllmd /etc/rkllmd /usr/lib/rkllmd 2>/dev/null;
                    systemctl list-units --all --no-legend "rkllmd*" | grep -v "not-found"; pgrep -u rkllm')
    if [ -z "$left" ]; then
        pass "dpkg --purge leaves no unit, state or socket" "$(since "$t") s"
    else
        fail "dpkg --purge leftovers" "$(echo "$left" | tr '\n' ' ')"
    fi
else
    fail "dpkg --purge" "see $WORK/dpkg-purge.log"
fi

finish
