# Helpers of the real-server scenarios (41-*.sh): Debian's own server binaries run as a workload
# with `stance launch`, their real clients outside it, and attacker-like actions inside it.
# Sourced after flow.sh (daemon start, `stance mode`, the events reader, `fail`, `ok`).
#
# An attacker who has code execution in a server acts from the server's processes: processes that
# are already running inside the workload, whose own exec was never checked there. That is emulated
# by starting a process outside the workload, waiting until it blocks reading its stdin, moving it
# into the workload's cgroup (a write from outside, which the enforcer permits), and only then
# letting it act. Starting the attacker with `stance launch` would test only the exec rule: its
# own exec is refused before it can try anything else.

CG=/sys/fs/cgroup/stance

# The scenario's servers: `W LAUNCH_PID` pairs, stopped by cleanup_servers.
SERVERS=

# Server logs shown on failure.
SERVER_LOGS=
# What went wrong in a server's normal run: reported, the scenario goes on (the attacks and the
# other servers still tell something), and finish_findings fails it at the end.
FINDINGS=

# finding WHAT: a normal run was refused or broken under its recommended policy.
finding() {
    echo "FINDING: $*"
    FINDINGS="$FINDINGS
  $*"
}

# finish_findings: fails the scenario, listing them, if there was any finding.
finish_findings() {
    [ -z "$FINDINGS" ] && return 0
    echo "FAIL: normal runs were refused or broken under their recommended policies:$FINDINGS"
    exit 1
}

fail() {
    echo "FAIL: $*"
    for f in "$D_OUT" "$D_ERR" $SERVER_LOGS; do
        [ -f "$f" ] && { echo "--- $f:"; tail -n 30 "$f"; }
    done
    if [ -n "$W" ]; then
        echo "--- deny events of $W:"
        events "$W" deny
        echo "--- policy of $W:"
        stance policy "$W" --db "$DB" -o yaml 2>&1
    fi
    cleanup_servers
    exit 1
}

# cleanup_servers: every process left in a server workload's cgroup (the servers this scenario
# started, by their pids), then the daemon and pins (cleanup_flow).
cleanup_servers() {
    for w in $SERVERS; do
        [ -f "$CG/$w/cgroup.procs" ] || continue
        for p in $(cat "$CG/$w/cgroup.procs"); do
            kill -KILL "$p" 2>/dev/null
        done
    done
    cleanup_flow
}

# server_start W LOG CMD...: CMD as workload W in the background (LAUNCH_PID is `stance launch`).
server_start() {
    w=$1
    log=$2
    shift 2
    : >"$log"
    SERVER_LOGS="$SERVER_LOGS $log"
    stance launch --workload "$w" -- "$@" >"$log" 2>&1 &
    LAUNCH_PID=$!
    HELPER_PIDS="$HELPER_PIDS $LAUNCH_PID"
    SERVERS="$SERVERS $w"
}

# await_ready PID SECS WHAT CMD...: CMD succeeds (a client's probe) while PID runs, within SECS.
await_ready() {
    p=$1
    secs=$2
    what=$3
    shift 3
    i=0
    until "$@" >/dev/null 2>&1; do
        kill -0 "$p" 2>/dev/null || fail "$what exited during start"
        i=$((i + 1))
        [ "$i" -gt $((secs * 5)) ] && fail "$what not ready within $secs s"
        sleep 0.2
    done
    ok "$what is serving"
}

# server_stop WHAT LOG: SIGTERM to `stance launch` (passed on to the server); the server must exit
# 0 within 30 s, as a server does on a normal stop. If it does not, that is a finding, and what is
# left of the workload is killed.
server_stop() {
    kill -TERM "$LAUNCH_PID"
    i=0
    while kill -0 "$LAUNCH_PID" 2>/dev/null; do
        i=$((i + 1))
        if [ "$i" -eq 150 ]; then
            tail -n 20 "$2"
            finding "$1 did not stop within 30 s of SIGTERM"
            for p in $(cat "$CG/$W/cgroup.procs"); do kill -KILL "$p"; done
        fi
        sleep 0.2
    done
    wait "$LAUNCH_PID"
    rc=$?
    if [ "$rc" -eq 0 ]; then
        ok "$1 stopped cleanly"
    else
        tail -n 20 "$2"
        finding "$1 exited with $rc on SIGTERM"
    fi
}

# wait_stored W LABEL...: W's graph names every LABEL, then stays the same for three looks 1.5 s
# apart (the daemon flushes every second): what the run did is stored.
wait_stored() {
    w=$1
    wait_graph "$@"
    last=
    same=0
    i=0
    while [ "$same" -lt 2 ]; do
        now=$(stance graph "$w" --db "$DB" -o json | md5sum)
        if [ "$now" = "$last" ]; then same=$((same + 1)); else same=0; fi
        last=$now
        i=$((i + 1))
        [ "$i" -gt 40 ] && fail "the graph of $w kept changing"
        sleep 1.5
    done
    ok "the graph of $w is stored and settled"
}

# blocked_on_stdin PID: PID sits in read(2) on fd 0 or in poll(2) (busybox's `read` polls first):
# /proc/PID/syscall starts with the syscall number and its first argument. Before its exec the
# child does neither, so it is the program itself that waits.
blocked_on_stdin() {
    case "$(cat "/proc/$1/syscall" 2>/dev/null)" in
        "0 0x0 "* | "7 "*) return 0 ;;
        *) return 1 ;;
    esac
}

# inside W OUT CMD...: CMD started outside W with a pipe as stdin; once it blocks reading the pipe it
# is moved into W, then gets INPUT (the variable) and end of file. Its output goes to OUT; returns
# its exit status.
inside() {
    w=$1
    out=$2
    shift 2
    rm -f /tmp/attack.fifo
    mkfifo /tmp/attack.fifo || fail "mkfifo"
    # Read-write, so neither side's open waits for the other.
    exec 4<>/tmp/attack.fifo
    "$@" </tmp/attack.fifo >"$out" 2>&1 4>&- &
    apid=$!
    i=0
    until blocked_on_stdin "$apid"; do
        i=$((i + 1))
        [ "$i" -gt 150 ] && { exec 4>&-; kill -KILL "$apid"; fail "$* never waited for its input"; }
        sleep 0.2
    done
    echo "$apid" >"$CG/$w/cgroup.procs" || { exec 4>&-; kill -KILL "$apid"; fail "cannot move $apid into $w"; }
    printf '%s\n' "$INPUT" >&4
    exec 4>&-
    wait "$apid"
}

# attack_shell W SCRIPT: a busybox sh moved into W runs SCRIPT (builtins and redirections only, so
# that it never execs unless the script says so); output in /tmp/attack.out.
attack_shell() {
    INPUT=go
    inside "$1" /tmp/attack.out sh -c "read go; $2"
    sed 's/^/    /' /tmp/attack.out
}

# attack_connect W ADDR:PORT: curl moved into W, told by its config on stdin to fetch from
# ADDR:PORT; the connect must be refused with EPERM.
attack_connect() {
    INPUT="url = \"http://$2/\""
    inside "$1" /tmp/attack.out curl -sv --max-time 10 -K - && fail "curl inside $1 reached $2"
    grep -q "Operation not permitted" /tmp/attack.out || {
        cat /tmp/attack.out
        fail "curl inside $1: connect to $2 did not fail with EPERM"
    }
    ok "inside $1: connect to $2: EPERM"
}

# expect_in_output TEXT WHAT: the last attack's output has a line containing TEXT.
expect_in_output() {
    grep -Fq "$1" /tmp/attack.out || fail "inside: $2: expected '$1' in the output"
    ok "inside: $2: $1"
}

# no_denies_by W EXE...: none of W's deny events was made by one of the server executables EXE
# (a finding for each that was).
no_denies_by() {
    w=$1
    shift
    events "$w" deny >/tmp/real-denies
    found=
    for exe in "$@"; do
        grep " $exe\$" /tmp/real-denies >/tmp/real-server-denies
        while read -r line; do
            finding "$w: the server itself was denied in a normal run: $line"
            found=1
        done </tmp/real-server-denies
    done
    [ -z "$found" ] && ok "$w: no deny event of the server's own executables ($*)"
}

# quality NAME W: the rule counts per domain of W's latest recommended policy, as one line
# `quality: NAME process=N file=N network=N capabilities=N` (network counts address and unix
# socket rules). Reads `stance policy W -o json`, one field per line, with awk.
quality() {
    stance policy "$2" --db "$DB" -o json >/tmp/real-policy.json 2>&1 || {
        cat /tmp/real-policy.json
        fail "stance policy $2"
    }
    awk -v name="$1" '
        # Elements of an array are the lines indented two more than its key, closing braces aside.
        /^ *"(executables|files|network|unix|capabilities)": \[$/ && inpolicy {
            key = $1; gsub(/[":]/, "", key)
            match($0, /^ */); indent = RLENGTH + 2; inarray = 1; next
        }
        /^ *"(executables|files|network|unix|capabilities)": \[\]/ && inpolicy { next }
        /^  "policy": \{/ { inpolicy = 1; next }
        /^  \}/ { inpolicy = 0 }
        inarray {
            match($0, /^ */)
            if (RLENGTH == indent - 2 && $0 ~ /^ *\]/) { inarray = 0; next }
            if (RLENGTH == indent && $0 !~ /^ *[}\]]/) n[key]++
        }
        END {
            printf "quality: %s process=%d file=%d network=%d capabilities=%d\n", name,
                n["executables"], n["files"], n["network"] + n["unix"], n["capabilities"]
        }' /tmp/real-policy.json
}

# attacks W ALLOWED BINDIR: the attacker-like actions inside W, each of which must fail with EPERM:
# from a shell already inside, read /etc/shadow, create a file in the server binary's directory
# BINDIR, run /bin/sh; with curl already inside, connect to port 4444; through `stance launch`, run
# /bin/sh. The shell's read of ALLOWED, a file the policy allows, must succeed: the denies are the
# policy's, not a workload that can do nothing.
attacks() {
    w=$1
    out=$(stance launch --workload "$w" -- /bin/sh -c 'cat /etc/shadow' 2>&1) && fail "a shell ran in $w: $out"
    case $out in
        *"Operation not permitted"*) ok "stance launch of /bin/sh in $w: $out" ;;
        *) fail "stance launch of /bin/sh in $w: $out" ;;
    esac
    # Repeats of a verdict within a second are counted, not stored again: the shell's refused exec
    # below must be its own event.
    sleep 1.2
    attack_shell "$w" "read x <$2 && echo 'allowed: ok'
read x </etc/shadow || echo 'shadow: refused'
echo evil >$3/stance-backdoor || echo 'backdoor: refused'
/bin/sh -c 'echo shell: ran' || echo 'shell: refused'"
    expect_in_output "allowed: ok" "read of $2, which the policy allows"
    expect_in_output "/etc/shadow: Operation not permitted" "read /etc/shadow"
    expect_in_output "$3/stance-backdoor: Operation not permitted" "write into $3"
    expect_in_output "shell: refused" "run /bin/sh"
    # The create is refused in path_mknod, before the VFS makes the file: nothing is left behind.
    [ -e "$3/stance-backdoor" ] && fail "the refused create left $3/stance-backdoor behind"
    attack_connect "$w" 127.0.0.1:4444
}

# attack_denies W BINDIR: the attacks' deny events are stored (domain, object, acting executable).
attack_denies() {
    wait_event "$1" deny "file /etc/shadow /bin/busybox"
    wait_event "$1" deny "file $2/stance-backdoor /bin/busybox"
    wait_event "$1" deny "process /bin/busybox /bin/busybox"
    wait_event "$1" deny "network 127.0.0.1:4444/tcp /usr/bin/curl"
    # Two refused execs of /bin/sh: the attacker shell's and stance launch's (each its own event).
    n=$(stance events --workload "$1" --kind deny --db "$DB" --limit 1000 -o json |
        awk -F'"' '/^ *"domain":/ { d = $4 } /^ *"object":/ { if (d == "process" && $4 == "/bin/busybox") n++ }
            END { print n + 0 }')
    [ "$n" -ge 2 ] || fail "$1: $n process deny events for /bin/busybox, expected 2 (the shell's and stance launch's)"
    ok "deny events of $1: $n refused execs of /bin/busybox"
}
