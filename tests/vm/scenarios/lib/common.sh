# Helpers every scenario library shares. Sourced, never run on its own; the sourcing library
# defines `fail`.

# await_start FILE PATTERN PID SECONDS WHAT: a line of FILE matches PATTERN (grep -E) while the
# background process PID keeps running; fails if it exits first or SECONDS pass.
await_start() {
    i=0
    until grep -Eq "$2" "$1"; do
        kill -0 "$3" 2>/dev/null || fail "$5 exited during start"
        i=$((i + 1))
        [ "$i" -gt $(($4 * 10)) ] && fail "$5 not ready within $4 s"
        sleep 0.1
    done
}

# linked PROGRAM: 0 when a BPF link of a loaded program named PROGRAM exists (it is attached).
# Loaded but unlinked (the daemon holds the program, nothing runs it) is 1. The kernel keeps 15
# characters of a program's name; bpftool shows the whole name only where it finds it in BTF.
linked() {
    command -v bpftool >/dev/null || fail "bpftool is not in the guest (pass --bin)"
    short=$(printf '%.15s' "$1")
    for id in $(bpftool prog show | awk -v full="$1" -v short="$short" \
        '/^[0-9]+: / { for (i = 1; i < NF; i++) if ($i == "name" && ($(i + 1) == full || $(i + 1) == short)) { sub(":", "", $1); print $1 } }'); do
        bpftool link show | grep -Eq "[[:space:]]prog $id([[:space:]]|\$)" && return 0
    done
    return 1
}

# expect_linked yes|no PROGRAM...: each PROGRAM is (yes) or is not (no) attached.
expect_linked() {
    want=$1
    shift
    for p in "$@"; do
        if linked "$p"; then got=yes; else got=no; fi
        if [ "$got" != "$want" ]; then
            bpftool prog show | grep -A1 ' name stance_' | sed 's/^/    prog: /'
            bpftool link show | sed 's/^/    link: /'
            fail "$p: attached=$got, expected $want"
        fi
    done
    ok "attached=$want: $*"
}
