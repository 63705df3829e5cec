# Helpers of the daemon-flow scenarios (4x-*.sh): the real `stance` daemon and CLI, a workload
# started with `stance launch`. Sourced, never run on its own.
#
# Needs on PATH: stance, flow-workload, enforce-probe (stance-vmtest --bin ... --lib-from-ldd).

DB=/tmp/flow.db
D_OUT=/tmp/flow-daemon.out
D_ERR=/tmp/flow-daemon.err
D_PID=
# Helper processes a scenario started (servers), killed by cleanup_flow.
HELPER_PIDS=
# Every daemon of these scenarios uses the default pin directory; this is where its pins live.
PINS=/sys/fs/bpf/stance

fail() {
    echo "FAIL: $*"
    # The daemon's counters, then its stop report: what it received, dropped or could not store.
    if [ -n "$D_PID" ] && [ -f /tmp/api.token ] && command -v curl >/dev/null; then
        echo "--- metrics:"
        curl -s -H "Authorization: Bearer $(cat /tmp/api.token)" http://127.0.0.1:7070/metrics | grep -E '^stance_(verdict|enforce|events)' | head -n 30
    fi
    if [ -n "$D_PID" ]; then
        kill -TERM "$D_PID" 2>/dev/null
        i=0
        while kill -0 "$D_PID" 2>/dev/null && [ "$i" -lt 100 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        echo "--- stance events after the daemon stopped:"
        stance events --db "$DB" --limit 20 2>&1
    fi
    for f in "$D_OUT" "$D_ERR"; do
        [ -f "$f" ] && { echo "--- $f:"; tail -n 40 "$f"; }
    done
    cleanup_flow
    exit 1
}

ok() { echo "ok: $*"; }

. /scenarios/lib/common.sh

need() { command -v "$1" >/dev/null || fail "$1 is not in the guest (pass --bin)"; }

need stance
need flow-workload
need enforce-probe
FW=$(command -v flow-workload)

# cleanup_flow: the daemon and the helpers (by their pids), the pins. On failure and at the end.
cleanup_flow() {
    for p in $HELPER_PIDS; do
        kill "$p" 2>/dev/null
    done
    HELPER_PIDS=
    if [ -n "$D_PID" ]; then
        kill -KILL "$D_PID" 2>/dev/null
        wait "$D_PID" 2>/dev/null
        D_PID=
    fi
    # Unpinning the links detaches the programs: nothing is enforced any more.
    rm -rf "$PINS"
}

# start_daemon: `stance run --db $DB` in the background, until it says it is writing.
start_daemon() {
    : >"$D_OUT"
    : >"$D_ERR"
    stance run --db "$DB" >"$D_OUT" 2>"$D_ERR" &
    D_PID=$!
    await_start "$D_OUT" '^stance: writing to' "$D_PID" 120 daemon
}

# expect_daemon_line PATTERN: the daemon's start-up report has a line matching PATTERN (grep -E).
expect_daemon_line() {
    grep -Eq "$1" "$D_OUT" || fail "daemon did not print a line matching: $1"
    ok "daemon: $(grep -E "$1" "$D_OUT" | head -n 1)"
}

# mode W MODE: `stance mode W MODE`, which must succeed; prints its answer.
mode() {
    out=$(stance mode "$1" "$2" 2>&1) || fail "stance mode $1 $2: $out"
    ok "stance mode $1 $2: $out"
}

# run_inside W EXPECTED_RC ACTIONS...: flow-workload ACTIONS as workload W; prints its report.
run_inside() {
    w=$1
    want=$2
    shift 2
    out=$(stance launch --workload "$w" -- "$FW" "$@" 2>&1)
    rc=$?
    echo "$out" | sed 's/^/    /'
    [ "$rc" -eq "$want" ] || fail "workload $w ($*): exit $rc, expected $want"
}

# expect_action WHERE RESULT ACTION [TARGET]: one action inside workload WHERE (or outside the
# workload when WHERE is `-`) reports RESULT (ok, EPERM).
expect_action() {
    where=$1
    want=$2
    shift 2
    if [ "$where" = - ]; then
        label=outside
        got=$("$FW" "$@" 2>&1)
    else
        label="inside $where"
        got=$(stance launch --workload "$where" -- "$FW" "$@" 2>&1)
    fi
    case "$got" in
        *": $want") ok "$label: $*: $want" ;;
        *) fail "$label: $*: expected $want, got '$got'" ;;
    esac
}

# wait_graph W LABEL...: the stored graph of W names every LABEL (as a JSON string) within 30 s.
wait_graph() {
    w=$1
    shift
    i=0
    while :; do
        g=$(stance graph "$w" --db "$DB" -o json 2>&1)
        missing=
        for label in "$@"; do
            case "$g" in *"\"$label\""*) ;; *) missing="$missing $label" ;; esac
        done
        [ -z "$missing" ] && break
        i=$((i + 1))
        [ "$i" -gt 150 ] && { echo "$g" | tail -n 40; fail "graph of $w never showed:$missing"; }
        sleep 0.2
    done
    ok "graph of $w has $*"
}

# events W KIND: W's stored events of KIND as lines `domain object actor`, sorted, without repeats.
# `stance events -o json` prints one field per line, so awk reads it without a JSON parser.
events() {
    stance events --workload "$1" --kind "$2" --db "$DB" --limit 1000 -o json |
        awk -F'"' '
            /^ *"domain":/ { d = $4 }
            /^ *"object":/ { o = $4 }
            /^ *"actor":/  { a = $4 }
            /^ *},?$/      { print d, o, a }' | sort -u
}

# wait_event W KIND LINE: `domain object actor` LINE is among W's stored KIND events within 30 s.
wait_event() {
    i=0
    until events "$1" "$2" | grep -Fxq "$3"; do
        i=$((i + 1))
        [ "$i" -gt 150 ] && {
            events "$1" "$2"
            echo "--- stance events (every workload and kind):"
            stance events --db "$DB" --limit 50 2>&1
            fail "no $2 event of $1: $3"
        }
        sleep 0.2
    done
    ok "$2 event of $1: $3"
}

# expect_events W KIND FILE: W's KIND events are exactly the lines of FILE (sorted).
expect_events() {
    events "$1" "$2" >/tmp/flow-events.got
    sort -u "$3" >/tmp/flow-events.want
    if ! cmp -s /tmp/flow-events.got /tmp/flow-events.want; then
        echo "--- expected $2 events of $1:"
        cat /tmp/flow-events.want
        echo "--- stored:"
        cat /tmp/flow-events.got
        fail "the $2 events of $1 are not exactly the expected ones"
    fi
    ok "the $2 events of $1 are exactly the $(wc -l </tmp/flow-events.want) expected ones"
}
