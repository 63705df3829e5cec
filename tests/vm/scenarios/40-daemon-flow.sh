#!/bin/sh
# The whole enforcement flow through the product: `stance run`, `stance launch`, `stance graph`,
# `stance mode`, `stance events`, `stance policy`; the policy is the recommender's latest version.
#
#  1. observe: a normal run of workload `flow` (reads two files, writes one, saves one by writing a
#     temporary file and renaming it over the file, runs a binary, connects to a local TCP port
#     and, through a symlink, to a unix socket, sends a unix datagram through a symlink and a UDP
#     datagram with sendto and three more in one sendmmsg, connects to another port with TCP Fast
#     Open, no raw socket)
#     reaches the graph;
#  2. audit: the same run plus one new read: nothing is blocked, and the new read, only it, is
#     stored as a would-deny event, which `stance policy` lists as a proposed addition;
#  3. enforce: the same normal run succeeds completely; the unaccepted proposal stays denied; then
#     each forbidden action (a file never
#     read, a write to a file only read, exec of /bin/sh, another port, sendto another address, a
#     sendmmsg's message to another address, a raw socket, a ptrace or /proc/PID/environ read of a host process) fails inside the workload
#     and works outside it, and the stored deny
#     events are exactly those (domain, object, acting executable);
#  4. `kill -9` of the daemon: denies still hold; a restarted daemon adopts its pins (one link
#     generation), restores the workload, keeps enforcing, and stores the denies made while it was
#     down as well as new ones;
#  5. `stance mode flow observe` releases the workload: the forbidden actions succeed, and with no
#     workload left in audit or enforce the deciding programs are detached (attached again by the
#     next enforce, which denies again).
# The bypass variants (symlink, hardlink, openat2, io_uring, execveat, memfd, mapped IPv6, long
# paths) are covered by 30-37 with the enforcement driver.
#
# Two daemon starts and some forty CLI calls under software emulation: about a minute on a busy
# 2-core host, so more than the default two minutes is allowed.
# vmtest-timeout: 300
. /scenarios/lib/flow.sh

W=flow
D=/tmp/flow
rm -f "$DB" "$DB"-*
mkdir -p $D/db || fail "mkdir"
for f in a b secret secret2 new; do echo "$f" >$D/$f; done
: >$D/out
# "A binary it runs": a copy of the workload program, which exits 0 without actions.
cp "$FW" $D/helper || fail "cp"
# 8040 is the port the workload uses, 8041 one it never connects to; nothing listens on the UDP port.
enforce-probe serve-tcp 8040 >/tmp/flow-srv1 2>&1 &
srv1=$!
enforce-probe serve-tcp 8041 >/tmp/flow-srv2 2>&1 &
srv2=$!
# 8043: reached with TCP Fast Open (a send that connects, decided in socket_sendmsg).
enforce-probe serve-tcp 8043 >/tmp/flow-srv5 2>&1 &
srv5=$!
HELPER_PIDS="$srv1 $srv2 $srv5"
await_start /tmp/flow-srv1 '^listening' $srv1 30 "the server on 8040"
await_start /tmp/flow-srv2 '^listening' $srv2 30 "the server on 8041"
await_start /tmp/flow-srv5 '^listening' $srv5 30 "the server on 8043"
# A unix server the workload reaches through a symlink (as /dev/log or /var/run/... are): the peer's
# bound path is what enforcement matches, so it is what observation must learn.
enforce-probe serve-unix $D/srv.sock >/tmp/flow-srv3 2>&1 &
srv3=$!
HELPER_PIDS="$HELPER_PIDS $srv3"
await_start /tmp/flow-srv3 '^listening' $srv3 30 "the unix server"
ln -s srv.sock $D/link.sock || fail "ln"
# And a unix datagram receiver, sent to through a symlink without connect (syslog(3) to /dev/log
# does so when its connect failed): enforcement's unix_may_send matches the receiver's bound path.
enforce-probe serve-unix-dgram $D/dsrv.sock >/tmp/flow-srv4 2>&1 &
srv4=$!
HELPER_PIDS="$HELPER_PIDS $srv4"
await_start /tmp/flow-srv4 '^listening' $srv4 30 "the unix datagram receiver"
ln -s dsrv.sock $D/dlink.sock || fail "ln"
# `save` renames over $D/db/state, which it never opens: only the observed rename earns the write
# that enforcement's path_rename asks for that name. (In a directory of its own: two names created
# in one directory would earn a write rule on the directory, which would allow `write $D/a` below.)
NORMAL="read $D/a read $D/b write $D/out save $D/db/state exec $D/helper connect 127.0.0.1:8040 unix $D/link.sock dgram $D/dlink.sock sendto 127.0.0.1:8042 tfo 127.0.0.1:8043 peek"
# One sendmmsg to three destinations: enforcement decides each message, so each must be learned.
NORMAL="$NORMAL sendmmsg 127.0.0.1:8044,127.0.0.1:8045,127.0.0.3:8046"

echo "== 1. observe"
start_daemon
expect_daemon_line "^  enforcement file: bpf-lsm"
expect_daemon_line "^  control: listening on "
# Nothing is in audit or enforce: the deciding programs are loaded (the canary proved them) but not
# attached, so no open, exec, capability check or connect of the host runs them.
expect_linked no stance_file_open stance_bprm_check stance_capable stance_socket_connect
# shellcheck disable=SC2086 # NORMAL is a list of words on purpose
run_inside $W 0 $NORMAL
wait_graph $W $D/a $D/b $D/out $D/db/state $D/db/state.tmp $D/helper "$FW" 127.0.0.1:8040/tcp unix:$D/srv.sock unix:$D/dsrv.sock 127.0.0.1:8042/udp 127.0.0.1:8043/tcp \
    127.0.0.1:8044/udp 127.0.0.1:8045/udp 127.0.0.3:8046/udp

echo "== 2. audit"
mode $W audit
expect_linked yes stance_file_open stance_bprm_check stance_capable stance_socket_connect
# shellcheck disable=SC2086
run_inside $W 0 $NORMAL read $D/new
# The new read is the workload's last action, and verdicts are stored in order: once it is there,
# a would-deny of anything the normal run did would be there too.
wait_event $W would-deny "file $D/new $FW"
echo "file $D/new $FW" >/tmp/flow-would-deny
expect_events $W would-deny /tmp/flow-would-deny
wait_graph $W $D/new
# The would-deny is a proposed addition to the recommended policy, never applied silently: the
# policy lists it under "proposed" (without --explain, proposals are the only objects with an
# "id"), and the enforce below, which loads the latest version, still denies it.
pid=$(stance policy $W --db "$DB" -o json | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p' | head -n 1)
[ -n "$pid" ] || fail "no proposed addition for the audit's would-deny: $(stance policy $W --db "$DB" -o json)"
ok "proposed addition $pid for the audit's would-deny"

echo "== 3. enforce"
mode $W enforce
# shellcheck disable=SC2086
run_inside $W 0 $NORMAL
expect_action $W EPERM read $D/new
expect_action $W EPERM read $D/secret
expect_action - ok read $D/secret
expect_action $W EPERM write $D/a
expect_action - ok write $D/a
expect_action $W EPERM exec /bin/sh
expect_action - ok exec /bin/sh
expect_action $W EPERM connect 127.0.0.1:8041
expect_action - ok connect 127.0.0.1:8041
expect_action $W EPERM tfo 127.0.0.1:8041
expect_action - ok tfo 127.0.0.1:8041
expect_action $W EPERM sendto 127.0.0.2:8042
expect_action - ok sendto 127.0.0.2:8042
# A learned destination, then one never seen: the kernel sends the first message and refuses the
# second, and sendmmsg reports only the count.
expect_action $W "error: sent 1 of 2" sendmmsg 127.0.0.1:8044,127.0.0.2:8044
expect_action - ok sendmmsg 127.0.0.1:8044,127.0.0.2:8044
# The normal run's peek of its own child is allowed (ptrace: same-workload); a process of another
# workload (the host's server) is not, by ptrace(2) or through its /proc files.
expect_action $W EPERM ptrace $srv1
expect_action - ok ptrace $srv1
expect_action $W "error: Permission denied (os error 13)" peek-pid $srv1
expect_action - ok peek-pid $srv1
expect_action $W EPERM raw
expect_action - ok raw
cat >/tmp/flow-deny <<EOF
file $D/new $FW
file $D/secret $FW
file $D/a $FW
process /bin/busybox $FW
network 127.0.0.1:8041/tcp $FW
network 127.0.0.2:8042/udp $FW
network 127.0.0.2:8044/udp $FW
process ptrace pid $srv1 (enforce-probe) $FW
capabilities CAP_NET_RAW $FW
EOF
# The raw socket was the last deny; the normal run before all of them must have added none.
wait_event $W deny "capabilities CAP_NET_RAW $FW"
expect_events $W deny /tmp/flow-deny
expect_events $W would-deny /tmp/flow-would-deny

echo "== 4. kill -9 and restart"
kill -KILL "$D_PID"
wait "$D_PID" 2>/dev/null
D_PID=
ok "daemon killed with SIGKILL"
expect_action $W EPERM read $D/secret2
expect_action - ok read $D/secret2
# shellcheck disable=SC2086
run_inside $W 0 $NORMAL
start_daemon
expect_daemon_line "^  enforcement of $W: restored, "
gens=$(ls $PINS/enforce-v*/links | wc -l)
[ "$gens" -eq 1 ] || fail "$gens link generations pinned after the restart, expected 1"
ok "one link generation pinned (the restarted daemon's)"
expect_action $W EPERM write $D/b
wait_event $W deny "file $D/b $FW"
# Made while no daemon ran: kept in the pinned ring buffer and stored by the new daemon.
wait_event $W deny "file $D/secret2 $FW"
printf '%s\n' "file $D/secret2 $FW" "file $D/b $FW" >>/tmp/flow-deny
expect_events $W deny /tmp/flow-deny

echo "== 5. observe releases the workload"
mode $W observe
expect_action $W ok read $D/secret
expect_action $W ok write $D/a
expect_action $W ok exec /bin/sh
expect_action $W ok connect 127.0.0.1:8041
expect_action $W ok sendto 127.0.0.2:8042
expect_action $W ok raw
expect_action $W ok ptrace $srv1
# The last workload left: the programs are detached, and attached again by the next enforce.
expect_linked no stance_file_open stance_bprm_check stance_capable stance_socket_connect
mode $W enforce
expect_linked yes stance_file_open stance_bprm_check stance_capable stance_socket_connect
expect_action $W EPERM read $D/secret
mode $W observe
expect_linked no stance_file_open stance_bprm_check stance_capable stance_socket_connect
expect_action $W ok read $D/secret
expect_events $W deny /tmp/flow-deny

kill -TERM "$D_PID"
wait "$D_PID"
rc=$?
D_PID=
[ "$rc" -eq 0 ] || fail "daemon exited with $rc on SIGTERM"
ok "daemon stopped cleanly"
# Nothing was in audit or enforce any more: nothing of Stance's stays in the kernel.
[ -e $PINS ] && fail "a clean stop with nothing in force left pins: $(find $PINS | head)"
ok "no pins left after a clean stop with nothing in force"
cleanup_flow
rmdir /sys/fs/cgroup/stance/$W /sys/fs/cgroup/stance 2>/dev/null
echo "ok: scenario done"
