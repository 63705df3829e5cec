#!/bin/sh
# File domain in enforce: a workload may open exactly what its policy lists, the way it lists it
# (read, or read and write), whatever route it takes to the file: the decision is made in
# lsm/file_open from the opened struct file, so symlinks, hardlinks, relative paths, /proc/self/root,
# openat2 and io_uring all meet the same rule. A path too long to resolve is denied, never allowed.
# The same opens from outside the workload's cgroup are untouched. Creates, renames, links, unlinks
# and truncates by path need write on every name they change, decided before the change.
#
# Some forty probes under software emulation, beside another VM on a busy host.
# vmtest-timeout: 300
. /scenarios/lib/enforce.sh

W=/tmp/wl
mkdir -p $W/rw || fail "mkdir"
echo data >$W/allowed
echo ro >$W/readonly
echo secret >$W/secret
ln -sf $W/secret $W/link-to-secret
ln -f $W/secret /tmp/hard-secret
cg=$(mkcg enforce-file)

cat >/tmp/file-policy.json <<JSON
{"executables": [], "network": [], "unix": [], "capabilities": [], "ptrace": "none",
 "files": [
    {"path": "$W/allowed", "read": true},
    {"path": "$W/readonly", "read": true},
    {"path": "$W/rw", "prefix": true, "read": true, "write": true},
    $LIB_RULES
 ]}
JSON

start_driver --policy /tmp/file-policy.json --cgroup "$cg" --modes file=enforce --policy-id 30 --timing
grep '^timing:' "$DRV_OUT"
expect_status file bpf-lsm
expect_status process bpf-lsm
expect_status network bpf-lsm
expect_status capabilities bpf-lsm

expect ok "allowed read inside" in_cg "$cg" enforce-probe open $W/allowed
expect EPERM "never-read file inside" in_cg "$cg" enforce-probe open $W/secret
wait_verdict "^verdict: deny file $W/secret exe=$PROBE .*access=1 "
expect EPERM "write to a read-only file" in_cg "$cg" enforce-probe open $W/readonly w
wait_verdict "^verdict: deny file $W/readonly .*access=2 "
expect EPERM "truncate a read-only file" in_cg "$cg" enforce-probe open $W/readonly trunc
expect ok "create in a read-write directory" in_cg "$cg" enforce-probe open $W/rw/new creat
expect EPERM "create outside it" in_cg "$cg" enforce-probe open $W/new creat
[ -e $W/new ] && fail "the refused create left $W/new behind"
ok "the refused create left no file behind"
wait_verdict "^verdict: deny file $W/new .*access=2 "
# Names change without an open: each needs write on every name it creates, replaces or removes.
echo evil >$W/rw/evil
expect EPERM "rename a writable file over a read-only one" in_cg "$cg" enforce-probe rename $W/rw/evil $W/readonly
grep -qx ro $W/readonly || fail "the refused rename replaced $W/readonly"
expect EPERM "rename a read-only file away" in_cg "$cg" enforce-probe rename $W/readonly $W/rw/taken
expect ok "rename inside the read-write directory" in_cg "$cg" enforce-probe rename $W/rw/evil $W/rw/evil2
expect EPERM "unlink a read-only file" in_cg "$cg" enforce-probe unlink $W/readonly
expect ok "unlink in the read-write directory" in_cg "$cg" enforce-probe unlink $W/rw/evil2
expect EPERM "hardlink a read-only file into the read-write directory" in_cg "$cg" enforce-probe link $W/readonly $W/rw/alias
[ -e $W/rw/alias ] && fail "the refused link made $W/rw/alias"
expect EPERM "truncate(2) a read-only file by path" in_cg "$cg" enforce-probe truncate $W/readonly
grep -qx ro $W/readonly || fail "the refused truncate emptied $W/readonly"
expect EPERM "mkfifo outside the read-write directory" in_cg "$cg" enforce-probe mkfifo $W/fifo
expect ok "mkfifo inside it" in_cg "$cg" enforce-probe mkfifo $W/rw/fifo
expect ok "the same rename outside the workload" enforce-probe rename $W/allowed $W/allowed2
expect ok "and back" enforce-probe rename $W/allowed2 $W/allowed

expect ok "the same read outside the workload" enforce-probe open $W/secret
expect ok "the same write outside the workload" enforce-probe open $W/readonly w

expect EPERM "through a symlink" in_cg "$cg" enforce-probe open $W/link-to-secret
expect EPERM "through a hardlink" in_cg "$cg" enforce-probe open /tmp/hard-secret
wait_verdict "^verdict: deny file /tmp/hard-secret "
expect EPERM "relative path after cd" in_cg "$cg" sh -c "cd $W && exec enforce-probe open secret"
expect EPERM "through /proc/self/root" in_cg "$cg" enforce-probe open /proc/self/root$W/secret
expect ok "an allowed file reopened through /proc/self/fd" in_cg "$cg" sh -c "exec 3<$W/allowed; exec enforce-probe open /proc/self/fd/3"
expect EPERM "openat2" in_cg "$cg" enforce-probe openat2 $W/secret
expect ok "openat2 of the allowed file" in_cg "$cg" enforce-probe openat2 $W/allowed
expect EPERM "io_uring OPENAT" in_cg "$cg" enforce-probe uring-open $W/secret
expect ok "io_uring OPENAT of the allowed file" in_cg "$cg" enforce-probe uring-open $W/allowed

# A path longer than the walker's 4096-byte buffer: 24 directories of 200 characters, built and
# entered by relative steps (the whole path is longer than PATH_MAX).
seg=$(printf '%0200d' 0)
mkdir -p /tmp/deep
expect ok "building a path deeper than the resolver's buffer" enforce-probe deep-make /tmp/deep "$seg" 24
expect ok "the deep file outside the workload" enforce-probe deep-open /tmp/deep "$seg" 24
expect EPERM "a path longer than the resolver's buffer" in_cg "$cg" enforce-probe deep-open /tmp/deep "$seg" 24
wait_verdict "^verdict: deny file .* truncated=1 "

stop_driver
grep '^losses:' "$DRV_OUT"
# Stopping the driver leaves the policy pinned and in force (as after a daemon restart) ...
expect EPERM "still denied after the driver stopped" in_cg "$cg" enforce-probe open $W/secret
# ... until the policy is released.
stance-enforce-test release --policy-id 30 >/dev/null || fail "release failed"
expect ok "allowed again after release" in_cg "$cg" enforce-probe open $W/secret
stance-enforce-test purge >/dev/null || fail "purge failed"
rmdir "$cg"
echo "ok: scenario done"
