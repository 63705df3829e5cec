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
