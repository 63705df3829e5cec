# Helpers shared by the enforcement scenarios (3x-*.sh). Sourced, never run on its own.
#
# Needs on PATH: stance-enforce-test and enforce-probe (stance-vmtest --bin ... --lib-from-ldd).

DRV_OUT=/tmp/enforce-driver.out
DRV_PID=

fail() {
    echo "FAIL: $*"
    if [ -f "$DRV_OUT" ]; then
        echo "--- driver output:"
        cat "$DRV_OUT"
    fi
    stop_driver
    stance-enforce-test purge >/dev/null 2>&1
    exit 1
}

ok() { echo "ok: $*"; }

. /scenarios/lib/common.sh

need() { command -v "$1" >/dev/null || fail "$1 is not in the guest (pass --bin)"; }

need stance-enforce-test
need enforce-probe
PROBE=$(command -v enforce-probe)

# mkcg NAME: a fresh cgroup for the workload under test; prints its directory.
mkcg() {
    d=/sys/fs/cgroup/$1
    mkdir -p "$d" || fail "cannot create $d"
    echo "$d"
}

# in_cg DIR CMD...: run CMD as a process of the cgroup DIR (it joins before exec).
in_cg() {
    sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$@"
}

# start_driver ARGS...: `stance-enforce-test run ARGS` in the background, until it prints `ready`.
start_driver() {
    : >"$DRV_OUT"
    stance-enforce-test run "$@" >>"$DRV_OUT" 2>&1 &
    DRV_PID=$!
    await_start "$DRV_OUT" '^ready' "$DRV_PID" 120 driver
}

stop_driver() {
    [ -n "$DRV_PID" ] || return 0
    kill -TERM "$DRV_PID" 2>/dev/null
    wait "$DRV_PID" 2>/dev/null
    DRV_PID=
}

# kill9_driver: what a daemon crash looks like.
kill9_driver() {
    kill -KILL "$DRV_PID"
    wait "$DRV_PID" 2>/dev/null
    DRV_PID=
}

# expect_status DOMAIN BACKEND: the driver reported this backend for the domain.
expect_status() {
    grep -q "^status: $1: $2" "$DRV_OUT" || fail "status of $1 is not '$2'"
    ok "$1 enforced by $2"
}

# expect RESULT DESC CMD...: CMD prints RESULT (ok, EPERM, ...).
expect() {
    want=$1
    desc=$2
    shift 2
    got=$("$@" 2>&1)
    [ "$got" = "$want" ] || fail "$desc: expected $want, got '$got'"
    ok "$desc: $want"
}

# wait_line FILE PATTERN SECONDS WHAT: a line of FILE matches PATTERN (grep -E) in time.
wait_line() {
    i=0
    until grep -Eq "$2" "$1"; do
        i=$((i + 1))
        [ "$i" -gt $(($3 * 10)) ] && fail "$4 within $3 s"
        sleep 0.1
    done
}

# wait_verdict PATTERN: a line of the driver's output matches PATTERN (grep -E) within 10 s.
wait_verdict() {
    wait_line "$DRV_OUT" "$1" 10 "no verdict matching: $1"
    ok "verdict: $(grep -E "$1" "$DRV_OUT" | head -n 1 | cut -c1-160)"
}

# no_verdict PATTERN: nothing matched (call after a wait_verdict for a later event).
no_verdict() {
    if grep -Eq "$1" "$DRV_OUT"; then
        fail "unexpected verdict: $(grep -E "$1" "$DRV_OUT" | head -n 1)"
    fi
}

# The libraries the (dynamically linked) probe needs, wherever --lib-from-ldd put them.
LIB_RULES='{"path": "/lib", "prefix": true, "read": true},
    {"path": "/lib64", "prefix": true, "read": true},
    {"path": "/usr/lib", "prefix": true, "read": true},
    {"path": "/usr/lib64", "prefix": true, "read": true},
    {"path": "/etc/ld.so.cache", "read": true},
    {"path": "/dev/null", "read": true, "write": true}'
