#!/bin/sh
# Process domain in enforce: exec is decided in lsm/bprm_check_security from bprm->file, so the
# binary the kernel actually opened is judged (busybox applets resolve to /bin/busybox), through
# execve, execveat, fexecve and memfd alike; a rule with an identity (device + inode) does not allow
# a replaced file at the same path; a memfd label allows only that label. Ptrace is refused, of a
# process outside the workload and, with `ptrace: none`, of one inside it (reported as such).
. /scenarios/lib/enforce.sh

cp "$PROBE" /tmp/x
cp "$PROBE" /tmp/y
cg=$(mkcg enforce-exec)
ident() { stat -c '"dev": %d, "ino": %i' "$1"; }

cat >/tmp/exec-policy.json <<JSON
{"files": [], "network": [], "unix": [], "capabilities": [], "ptrace": "none",
 "executables": [
    {"path": "$PROBE", $(ident "$PROBE")},
    {"path": "/tmp/y", $(ident /tmp/y)},
    {"path": "memfd:allowed"}
 ]}
JSON

start_driver --policy /tmp/exec-policy.json --cgroup "$cg" --modes process=enforce --policy-id 32
expect_status process bpf-lsm
expect ok "an allowed binary" in_cg "$cg" enforce-probe exec "$PROBE"
expect EPERM "a binary it never ran" in_cg "$cg" enforce-probe exec /tmp/x
wait_verdict "^verdict: deny process /tmp/x exe=$PROBE "
expect EPERM "/bin/sh (the kernel opens /bin/busybox)" in_cg "$cg" enforce-probe exec /bin/sh
wait_verdict "^verdict: deny process /bin/busybox "
expect EPERM "execveat" in_cg "$cg" enforce-probe execveat /tmp x
expect EPERM "fexecve" in_cg "$cg" enforce-probe fexecve /tmp/x
expect EPERM "a memfd" in_cg "$cg" enforce-probe memfd-exec /tmp/x evil
wait_verdict "^verdict: deny process memfd:evil "
expect ok "a memfd with the allowed label" in_cg "$cg" enforce-probe memfd-exec /tmp/x allowed
expect ok "the allowed binary with its identity" in_cg "$cg" enforce-probe exec /tmp/y
cp /tmp/x /tmp/y.new && mv /tmp/y.new /tmp/y
expect EPERM "another binary at the allowed path" in_cg "$cg" enforce-probe exec /tmp/y

expect ok "outside: execve" enforce-probe exec /tmp/x
expect ok "outside: fexecve" enforce-probe fexecve /tmp/x
expect ok "outside: memfd" enforce-probe memfd-exec /tmp/x evil

sleep 300 &
target=$!
expect EPERM "ptrace of a process outside the workload" in_cg "$cg" enforce-probe ptrace $target
wait_verdict "^verdict: deny process ptrace pid $target \(sleep\) "
expect ok "the same ptrace from outside" enforce-probe ptrace $target
kill $target
# A process of the workload itself, with `ptrace: none`: refused too, and the report says the target
# was in the workload (what `ptrace same-workload` would allow, so a deny can become a proposal).
# (Not through in_cg: a function run with & is a subshell, whose pid would be $!.)
sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg" enforce-probe serve-tcp 8032 >/tmp/exec-inner 2>&1 &
inner=$!
await_start /tmp/exec-inner '^listening' $inner 30 "a server inside the workload"
expect EPERM "ptrace of a process of the workload, ptrace: none" in_cg "$cg" enforce-probe ptrace $inner
wait_verdict "^verdict: deny process ptrace same-workload pid $inner \(enforce-probe\) "
kill $inner

stop_driver
stance-enforce-test purge >/dev/null || fail "purge failed"
rmdir "$cg"
echo "ok: scenario done"
