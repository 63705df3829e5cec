#!/bin/sh
# BPF-LSM enforcement really happens in this kernel: with the canary attached, a process in one
# cgroup is denied opening one file (EPERM) while the same read outside that cgroup, and of another
# file inside it, still work; and the deny is gone once the canary is detached.
#
# Needs `canary-loader` on PATH (stance-vmtest --bin .../canary-loader --lib-from-ldd).
fail() { echo "FAIL: $*"; exit 1; }

cg=/sys/fs/cgroup/stance-canary
target=/etc/canary
other=/etc/canary-other

# `in_cgroup CMD...`: run CMD as a process of $cg.
in_cgroup() {
    sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg" "$@"
}

if [ "${1:-}" = --attached ]; then
    # Runs under canary-loader, while the program is attached.
    if out=$(in_cgroup cat "$target" 2>&1); then
        fail "read of $target inside the cgroup succeeded: $out"
    fi
    case "$out" in
        *"Operation not permitted"*) echo "ok: denied inside the cgroup: $out" ;;
        *) fail "read of $target inside the cgroup failed, but not with EPERM: $out" ;;
    esac
    out=$(cat "$target" 2>&1) || fail "read of $target outside the cgroup failed: $out"
    [ "$out" = canary-secret ] || fail "unexpected content outside the cgroup: $out"
    echo "ok: allowed outside the cgroup"
    out=$(in_cgroup cat "$other" 2>&1) || fail "read of $other inside the cgroup failed: $out"
    echo "ok: another file is allowed inside the cgroup"
    exit 0
fi

command -v canary-loader >/dev/null || fail "canary-loader is not in the guest (pass --bin)"
mkdir -p "$cg" || fail "cannot create $cg"
echo canary-secret > "$target"
echo other > "$other"

# Control: without the program the same read works, so a deny later comes from the program.
in_cgroup cat "$target" >/dev/null || fail "control read inside the cgroup failed before attaching"

canary-loader --cgroup "$cg" --target "$target" -- sh "$0" --attached || fail "checks with the canary attached failed"

in_cgroup cat "$target" >/dev/null || fail "read inside the cgroup still denied after the loader exited"
echo "ok: allowed again after detach"
