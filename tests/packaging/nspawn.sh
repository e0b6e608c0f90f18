# shellcheck shell=bash
# Boot a Debian rootfs with a real systemd as PID 1 under systemd-nspawn, without a
# host systemd, machined or D-Bus (the CI machine's PID 1 is not systemd). Sourced by
# run.sh; adapted from the project's nspawn recipe (shared/notes/systemd-nspawn-recipe.md).
#
# Needs: NS_NAME (machine name), NS_ROOT (rootfs dir), NS_STATE (scratch dir).
# Pitfalls handled here: --register=no needs --keep-unit; the nspawn child is not the
# container's init until its NSpid ends in 1; `systemctl is-system-running` says
# "offline" for a moment after that; nspawn with --keep-unit creates payload/ and
# supervisor/ cgroups under the caller's, so the launcher moves into its own first.

NS_CPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

ns_cg_dirs() {
    if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
        echo "/sys/fs/cgroup/rkpkg-$NS_NAME"
    else
        [ -d /sys/fs/cgroup/systemd ] && echo "/sys/fs/cgroup/systemd/rkpkg-$NS_NAME"
        [ -d /sys/fs/cgroup/unified ] && echo "/sys/fs/cgroup/unified/rkpkg-$NS_NAME"
    fi
    return 0
}

ns_cg_cleanup() {
    local d
    for d in $(ns_cg_dirs); do
        [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    return 0
}

# Run a command inside the booted container with a clean environment.
ns_exec() {
    nsenter -t "$(cat "$NS_STATE/leader.pid")" -a -- env -i PATH=$NS_CPATH LANG=C.UTF-8 \
        SYSTEMD_PAGER= SYSTEMD_COLORS=0 TERM=dumb "$@"
}

# ns_boot TIMEOUT: start the container in the background; wait until multi-user is up.
ns_boot() {
    local timeout=${1:-90} nspid L="" c st deadline
    mkdir -p "$NS_STATE"
    rm -f "$NS_STATE/nspawn.pid" "$NS_STATE/leader.pid"
    ns_cg_cleanup
    # setsid: own session. The inner sh moves itself into a private cgroup, records
    # its pid, then execs nspawn (same pid).
    setsid sh -c '
        for d in '"$(ns_cg_dirs | tr '\n' ' ')"'; do mkdir -p "$d" && echo $$ > "$d/cgroup.procs"; done
        echo $$ > "$0/nspawn.pid"
        exec env SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn "$@"
    ' "$NS_STATE" --register=no --keep-unit --machine="$NS_NAME" --private-network \
        --console=read-only -D "$NS_ROOT" -b </dev/null >"$NS_STATE/console.log" 2>&1 &
    deadline=$(($(date +%s) + timeout))
    while [ ! -s "$NS_STATE/nspawn.pid" ]; do sleep 0.02; done
    nspid=$(cat "$NS_STATE/nspawn.pid")
    while [ -z "$L" ]; do
        kill -0 "$nspid" 2>/dev/null || { cat "$NS_STATE/console.log" >&2; return 1; }
        [ "$(date +%s)" -lt "$deadline" ] || { echo "no container init" >&2; return 1; }
        for c in $(cat /proc/"$nspid"/task/*/children 2>/dev/null); do
            grep -qE '^NSpid:[[:space:]]+[0-9]+[[:space:]]+1$' /proc/"$c"/status 2>/dev/null && L=$c
        done
        [ -n "$L" ] || sleep 0.02
    done
    echo "$L" > "$NS_STATE/leader.pid"
    while :; do
        st=$(timeout 5 nsenter -t "$L" -a -- systemctl is-system-running --wait 2>/dev/null)
        case "$st" in running|degraded) break ;; esac
        kill -0 "$nspid" 2>/dev/null || { cat "$NS_STATE/console.log" >&2; return 1; }
        [ "$(date +%s)" -lt "$deadline" ] || { tail -30 "$NS_STATE/console.log" >&2; return 1; }
        sleep 0.1
    done
    [ "$st" = degraded ] && ns_exec systemctl --failed --no-legend >&2
    return 0
}

ns_stop() {
    local nspid L
    nspid=$(cat "$NS_STATE/nspawn.pid" 2>/dev/null)
    L=$(cat "$NS_STATE/leader.pid" 2>/dev/null)
    if [ -n "$nspid" ] && kill -0 "$nspid" 2>/dev/null; then
        { [ -n "$L" ] && nsenter -t "$L" -a -- systemctl poweroff 2>/dev/null; } || kill -TERM "$nspid"
        for _ in $(seq 300); do kill -0 "$nspid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$nspid" 2>/dev/null; then
            kill -TERM "$nspid"; sleep 5
            kill -0 "$nspid" 2>/dev/null && kill -KILL "$nspid"
        fi
    fi
    rm -f "$NS_STATE/nspawn.pid" "$NS_STATE/leader.pid"
    ns_cg_cleanup
}
