#!/usr/bin/env bash
# make test-package: build the .deb, boot a Debian 12 minbase under systemd-nspawn
# (real systemd as PID 1), install the package there and check the service as an
# administrator would use it. Prints one line per check and a closing
# "test-package: N passed, N failed, N skipped" line; exits 1 if any check failed.
#
# Needs root (nspawn, nsenter, cgroups). As root it installs its own host packages;
# without root or nspawn support it prints why and exits 0 without testing.
#
# Knobs: RKLLMD_PKGTEST_WORK (scratch, default /tmp/rkllmd-pkgtest),
#        RKLLMD_CACHE (rootfs tarball cache, default ~/.cache/rkllmd),
#        RKLLMD_PKGTEST_DEB (test this .deb instead of building one),
#        RKLLMD_PKGTEST_KEEP=1 (leave the container running at the end).
set -uo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$REPO/tests/packaging
WORK=${RKLLMD_PKGTEST_WORK:-/tmp/rkllmd-pkgtest}
CACHE=${RKLLMD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rkllmd}
MODEL_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_ID=SmolLM2-135M-Instruct.Q4_1
SUITE=bookworm
# What the test itself uses inside the container, besides the package's Depends.
BASE_INCLUDE=systemd,systemd-sysv,dbus,python3,curl,procps

export NS_NAME=rkpkg NS_ROOT=$WORK/root NS_STATE=$WORK/state
# shellcheck source=tests/packaging/nspawn.sh
. "$HERE/nspawn.sh"

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
    return 0
}

# c CMD...: run in the container; output to stdout.
c() { ns_exec "$@"; }
# as USER CMD...: run as USER (with USER's supplementary groups) in the container.
as() { local u=$1; shift; ns_exec setpriv --reuid="$u" --regid="$u" --init-groups env HOME=/tmp "$@"; }
# json EXPR: evaluate a Python expression on the JSON document on stdin (as "d").
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
show() { c systemctl show -p "$1" --value "${2:-rkllmd.service}"; }

# ---------------------------------------------------------------- preflight
[ "$(uname -s)" = Linux ] || not_possible "systemd-nspawn needs Linux"
[ "$(id -u)" -eq 0 ] || not_possible "needs root for systemd-nspawn, nsenter and cgroups (run: sudo make test-package)"
[ -d /sys/fs/cgroup ] || not_possible "no cgroup file system at /sys/fs/cgroup"

host_deps() {
    local need=()
    command -v debootstrap >/dev/null || need+=(debootstrap)
    command -v systemd-nspawn >/dev/null || need+=(systemd-container)
    command -v dh_virtualenv >/dev/null || need+=(dh-virtualenv)
    command -v dh >/dev/null || need+=(debhelper)
    command -v dpkg-buildpackage >/dev/null || need+=(dpkg-dev)
    command -v lintian >/dev/null || need+=(lintian)
    command -v zstd >/dev/null || need+=(zstd)
    command -v cmake >/dev/null || need+=(cmake)
    command -v g++ >/dev/null || need+=(g++)
    command -v systemd-analyze >/dev/null || need+=(systemd)
    python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
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
say "host packages ready in $(since "$t") s"
[ -f "$REPO/models/$MODEL_FILE" ] || { fail "model" "models/$MODEL_FILE missing: run make models"; finish; }
trap cleanup EXIT

# ---------------------------------------------------------------- build + lint
if [ -n "${RKLLMD_PKGTEST_DEB:-}" ]; then
    DEB=$RKLLMD_PKGTEST_DEB
    say "testing the given package $DEB"
else
    t=$(now)
    if DEB=$("$HERE/build-deb.sh" "$WORK/out" | tail -1) && [ -f "$DEB" ]; then
        pass "dpkg-buildpackage -us -uc -b" "$(since "$t") s, $(du -h "$DEB" | cut -f1)"
    else
        fail "dpkg-buildpackage -us -uc -b" "see $WORK/out/build.log"
        finish
    fi
fi

t=$(now)
if lintian --fail-on error "$DEB" >"$WORK/lintian.log" 2>&1; then
    pass "lintian: no errors" "$(grep -c '^W:' "$WORK/lintian.log") warnings, $(since "$t") s"
else
    fail "lintian: no errors" "$(grep -E '^E:' "$WORK/lintian.log" | head -5 | tr '\n' ' ')"
fi

# ---------------------------------------------------------------- rootfs
apt_mirror() {
    local m
    m=$(grep -hs -E '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
            /etc/apt/sources.list.d/*.list 2>/dev/null \
        | grep -v -i security | grep -o -E 'https?://[^ ]*/debian/?' | head -1)
    echo "${m:-http://deb.debian.org/debian}"
}

# The package's Depends are installed at debootstrap time: the container has no network.
DEPENDS=$(dpkg-deb -f "$DEB" Depends | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/[[:space:]]//g' | grep -v '^$')
INCLUDE=$(printf '%s\n' ${BASE_INCLUDE//,/ } $DEPENDS | sort -u | paste -sd, -)
KEY=$(printf '%s|%s|%s' "$SUITE" "$(dpkg --print-architecture)" "$INCLUDE" | sha256sum | cut -c1-12)
TARBALL=$CACHE/rootfs-$SUITE-minbase-$KEY.tar.zst

t=$(now)
if [ ! -f "$TARBALL" ]; then
    say "debootstrap $SUITE minbase (cached afterwards as $TARBALL)"
    rm -rf "$WORK/bootstrap"
    if debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$WORK/bootstrap" "$(apt_mirror)" \
            >"$WORK/debootstrap.log" 2>&1; then
        echo rkpkg > "$WORK/bootstrap/etc/hostname"
        rm -f "$WORK"/bootstrap/var/cache/apt/*.bin "$WORK"/bootstrap/var/cache/apt/archives/*.deb
        tar -C "$WORK/bootstrap" --numeric-owner --xattrs -cf - . | zstd -T0 -q -f -o "$TARBALL.tmp" \
            && mv "$TARBALL.tmp" "$TARBALL"
        rm -rf "$WORK/bootstrap"
        pass "debootstrap rootfs" "$(since "$t") s"
    else
        tail -20 "$WORK/debootstrap.log"
        fail "debootstrap rootfs" "see $WORK/debootstrap.log"
        finish
    fi
fi
# A container left running by RKLLMD_PKGTEST_KEEP=1 goes first.
[ -s "$NS_STATE/nspawn.pid" ] && kill -0 "$(cat "$NS_STATE/nspawn.pid")" 2>/dev/null && ns_stop
mountpoint -q "$NS_ROOT" && umount -l "$NS_ROOT"
rm -rf "$NS_ROOT" && mkdir -p "$NS_ROOT"
mount -t tmpfs -o size=3G,mode=0755 rkpkg-root "$NS_ROOT"
zstd -dc "$TARBALL" | tar -C "$NS_ROOT" --numeric-owner --xattrs -xf -
mkdir -p "$NS_ROOT/var/tmp/rkpkg"
cp "$DEB" "$NS_ROOT/var/tmp/rkpkg/rkllmd.deb"
cp "$REPO/models/$MODEL_FILE" "$NS_ROOT/var/tmp/rkpkg/"
say "rootfs ready on tmpfs in $(since "$t") s"

t=$(now)
if ns_boot 90; then
    pass "boot $SUITE under systemd-nspawn" "$(since "$t") s"
else
    fail "boot $SUITE under systemd-nspawn" "console: $NS_STATE/console.log"
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
c cp "/var/tmp/rkpkg/$MODEL_FILE" "/var/lib/rkllmd/models/$MODEL_FILE"
t=$(now)
listed=""
while awk -v a="$t" -v b="$(now)" 'BEGIN{exit !(b - a < 5)}'; do
    if as alice rkllmctl --json ls 2>/dev/null | grep -q "\"$MODEL_ID\""; then listed=$(since "$t"); break; fi
    sleep 0.05
done
if [ -n "$listed" ] && awk -v s="$listed" 'BEGIN{exit !(s <= 2.0)}'; then
    pass "copied GGUF listed" "after $listed s"
else
    fail "copied GGUF listed within 2 s" "after ${listed:-more than 5} s"
fi

t=$(now)
if out=$(as alice rkllmctl load smollm2 2>&1) \
        && [ "$(as alice rkllmctl --json status | json 'd["state"], d["model"]')" = "ready $MODEL_ID" ]; then
    pass "rkllmctl load" "$(since "$t") s"
else
    fail "rkllmctl load" "$out"
fi

# ---------------------------------------------------------------- HTTP
if c sh -c 'ls /usr/lib/rkllmd/lib/python3*/site-packages/rkllmd/http/*.py' 2>/dev/null | grep -qv __init__.py; then
    t=$(now)
    body="{\"model\": \"$MODEL_ID\", \"messages\": [{\"role\": \"user\", \"content\": \"Say hello\"}], \"max_tokens\": 16, \"temperature\": 0}"
    out=$(c curl -sS --max-time 120 -H 'Content-Type: application/json' -d "$body" \
            http://127.0.0.1:8080/v1/chat/completions 2>&1)
    if content=$(echo "$out" | json 'd["choices"][0]["message"]["content"]' 2>/dev/null) && [ -n "$content" ]; then
        pass "curl POST /v1/chat/completions on 127.0.0.1:8080" "$(since "$t") s: ${content:0:40}"
    else
        fail "curl POST /v1/chat/completions" "${out:0:300}"
    fi
else
    skip "curl POST /v1/chat/completions" "PENDING: the package has no HTTP server yet (daemon/rkllmd/http)"
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
sleep 2
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
if out=$(as alice rkllmctl --timeout 60 status 2>&1) && c systemctl is-active --quiet rkllmd.service \
        && [ "$(show MainPID)" != "$old_pid" ] && [ "$(c stat -c %i /run/rkllmd/control.sock)" = "$inode" ]; then
    pass "systemctl restart: client during the restart answered, same socket" "$(since "$t") s"
else
    fail "systemctl restart with a waiting client" "$out"
fi

c systemctl stop rkllmd.service
if [ "$(c systemctl is-active rkllmd.service)" != active ] && [ "$(c systemctl is-active rkllmd.socket)" = active ]; then
    t=$(now)
    if out=$(as alice rkllmctl --timeout 60 status 2>&1) && c systemctl is-active --quiet rkllmd.service; then
        pass "stopped service started again by a client on rkllmd.socket" "$(since "$t") s"
    else
        fail "socket activation of a stopped service" "$out"
    fi
else
    fail "socket activation" "service did not stop or socket not active"
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
