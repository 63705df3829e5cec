#!/bin/sh
# The observation probes load on this kernel (CO-RE: one object for 6.1, 6.12 and the host's kernel),
# every family is active (capabilities too: fexit or BPF-LSM load here), and a launched workload's
# behaviour reaches the graph with kernel-resolved paths. These kernels allow fexit programs, so
# opens and network calls must be observed through fexit, with no syscall tracepoint attached
# (those would put every syscall on the slow path): the same facts as the host's tracepoint path,
# real absolute paths, a failed open with its errno, a TCP connect and a UDP sendto. Opens are
# hooked in the kernel's open path (do_filp_open) and connects in its connect path
# (__sys_connect_file), so an io_uring OPENAT and CONNECT, which no syscall hook sees, are in the
# graph too, as are io_uring's datagram sends (SENDMSG, SEND with a destination) and name changes
# (RENAMEAT). Unix datagrams name the socket that received them.
#
# Needs `stance`, `enforce-probe` and `send32` on PATH (stance-vmtest --bin target/release/stance
# --bin target/release/enforce-probe --bin target/release/send32 --lib-from-ldd; send32 is built by
# the Makefile's vm-tests target from tests/vm/compat/send32.c).
fail() { echo "FAIL: $*"; [ -f /tmp/stance.out ] && cat /tmp/stance.out /tmp/stance.err; exit 1; }

command -v stance >/dev/null || fail "stance is not in the guest (pass --bin)"
command -v enforce-probe >/dev/null || fail "enforce-probe is not in the guest (pass --bin)"
command -v send32 >/dev/null || fail "send32 is not in the guest (pass --bin)"
# A unix datagram socket connected before the daemon starts (a logger's, opened at its start): its
# sends name no destination, and its connect was never seen, so only the kernel's check of each
# datagram (security_unix_may_send) can say where they go.
mkdir -p /tmp/obs
enforce-probe serve-unix-dgram /tmp/obs/early.sock >/tmp/obs-early-srv 2>&1 &
early_srv=$!
i=0
until grep -q '^listening' /tmp/obs-early-srv; do
    i=$((i + 1))
    [ "$i" -gt 150 ] && fail "the early unix datagram receiver did not start: $(cat /tmp/obs-early-srv)"
    sleep 0.2
done
rm -f /tmp/obs-early-go
stance launch --workload vmearly -- enforce-probe unix-dgram-later /tmp/obs/early.sock /tmp/obs-early-go >/tmp/obs-early 2>&1 &
early=$!
i=0
until grep -q '^connected' /tmp/obs-early; do
    i=$((i + 1))
    [ "$i" -gt 150 ] && fail "the early unix datagram sender did not connect: $(cat /tmp/obs-early)"
    sleep 0.2
done

db=/tmp/observe.db
STANCE_LOG=${STANCE_LOG:-info} stance run --db "$db" >/tmp/stance.out 2>/tmp/stance.err &
pid=$!
i=0
until grep -q "stance: writing to" /tmp/stance.out; do
    kill -0 "$pid" 2>/dev/null || fail "daemon exited during start"
    i=$((i + 1))
    [ "$i" -gt 600 ] && fail "daemon did not start within 120 s"
    sleep 0.2
done
cat /tmp/stance.out
for fam in "exec: active" "file opens: active" "file name changes: active" "network: active" "process lifecycle: active" "cgroups: active" "capabilities: active" "ptrace: active"; do
    grep -q "  $fam" /tmp/stance.out || fail "probe family not active: $fam"
done
grep -q "  file opens: active (fexit, do_filp_open)$" /tmp/stance.out || fail "file opens: not observed through fexit on do_filp_open"
grep -q "  network: active (fexit, __sys_connect_file)$" /tmp/stance.out || fail "network: not observed through fexit on __sys_connect_file"
grep -q "  file name changes: active (fexit, security_path_\*)$" /tmp/stance.out || fail "file name changes: not observed through fexit on security_path_*"
# None of the syscall tracepoint programs was even loaded (the loader tries them only when fexit
# is refused), when bpftool is here to list programs.
if command -v bpftool >/dev/null; then
    bpftool prog show | grep "name stance_exit_" && fail "a syscall tracepoint program is loaded"
fi
echo "ok: opens and network calls through fexit"

mkdir -p /tmp/obs
echo hello >/tmp/obs/data.txt
echo ring >/tmp/obs/uring.txt
echo again >/tmp/obs/repeat.txt
echo old >/tmp/obs/trunc.txt
echo old >/tmp/obs/trunc2.txt
echo u >/tmp/obs/u.1
mkdir -p /tmp/obs/sub
ln -sf /tmp/obs/data.txt /tmp/obs/link
# Unix datagram receivers, one reached through a symlink (as /dev/log is), one by an abstract name.
enforce-probe serve-unix-dgram /tmp/obs/dg.sock >/tmp/obs-dg1 2>&1 &
dg1=$!
enforce-probe serve-unix-dgram @stance-obs-dg >/tmp/obs-dg2 2>&1 &
dg2=$!
ln -sf dg.sock /tmp/obs/dg-link
for f in /tmp/obs-dg1 /tmp/obs-dg2; do
    i=0
    until grep -q '^listening' $f; do
        i=$((i + 1))
        [ "$i" -gt 150 ] && fail "a unix datagram receiver did not start: $(cat $f)"
        sleep 0.2
    done
done
stance launch --workload vmobs -- sh -c 'cd /tmp/obs && cat data.txt link >/dev/null && chown 65534 /tmp/obs/data.txt
    cat missing.txt 2>/dev/null; nc 127.0.0.1 9 </dev/null; enforce-probe udp-send 127.0.0.1 5353; enforce-probe uring-open /tmp/obs/uring.txt
    enforce-probe uring-open /tmp/obs/uring-missing.txt; enforce-probe uring-connect 127.0.0.1 7
    enforce-probe uring-sendmsg 127.0.0.1 5354; enforce-probe uring-sendto 127.0.0.1 5355; send32 5360
    enforce-probe udp-sendmsg-compat-flag 127.0.0.1 5364
    enforce-probe unix-sendto dg-link; enforce-probe unix-sendto @stance-obs-dg; enforce-probe unix-sendto /tmp/obs/nobody.sock
    echo x >tmp.1 && mv tmp.1 dump.rdb && ln dump.rdb hard && rm hard && rmdir sub && mkfifo fifo
    enforce-probe truncate /tmp/obs/trunc.txt; enforce-probe uring-rename /tmp/obs/u.1 /tmp/obs/u.2; echo new >trunc2.txt
    i=0; while [ $i -lt 40 ]; do cat /tmp/obs/repeat.txt >/dev/null; i=$((i + 1)); done; true' \
    || fail "workload failed"

i=0
while :; do
    g=$(stance graph vmobs --db "$db" -o json 2>&1)
    # They may land in different flushes: wait for all of them.
    echo "$g" | grep -q '"/tmp/obs/data.txt"' && echo "$g" | grep -q 'CAP_CHOWN' &&
        echo "$g" | grep -q '"/tmp/obs/missing.txt"' && echo "$g" | grep -q '"127.0.0.1:9/tcp"' &&
        echo "$g" | grep -q '"127.0.0.1:5353/udp"' && echo "$g" | grep -q '"/tmp/obs/uring.txt"' && echo "$g" | grep -q '"/tmp/obs/uring-missing.txt"' &&
        echo "$g" | grep -q '"127.0.0.1:7/tcp"' && echo "$g" | grep -q '"/tmp/obs/u.2"' &&
        echo "$g" | grep -q '"127.0.0.1:5354/udp"' && echo "$g" | grep -q '"127.0.0.1:5355/udp"' &&
        echo "$g" | grep -q '"unix:/tmp/obs/dg.sock"' && echo "$g" | grep -q '"unix:@stance-obs-dg"' &&
        echo "$g" | grep -q '"unix:/tmp/obs/nobody.sock"' && echo "$g" | grep -q '"127.0.0.1:5363/udp"' && echo "$g" | grep -q '"127.0.0.1:5364/udp"' &&
        echo "$g" | grep -q '"/tmp/obs/trunc2.txt"' && break
    i=$((i + 1))
    [ "$i" -gt 150 ] && { echo "$g"; fail "graph never showed the workload's files and connect (io_uring's too), capability and sendto"; }
    sleep 0.2
done
echo "$g" | grep -q '"/tmp/obs/link"' && fail "a symlink path became a file node"
# The edge to the missing file carries the errno (fields in the order the API writes them).
flat=$(echo "$g" | tr -d ' \n')
echo "$flat" | grep -q '"target_label":"/tmp/obs/missing.txt","actor":"[^"]*","access":"[^"]*","result":"ENOENT"' ||
    { echo "$g"; fail "the failed open of /tmp/obs/missing.txt (ENOENT) is missing"; }
echo "$g" | grep -q '"missing.txt"' && fail "a relative path became a file node"
# io_uring's failed open has the retry's outcome (ENOENT), not that of its first, cache-only try.
echo "$flat" | grep -q '"target_label":"/tmp/obs/uring-missing.txt","actor":"[^"]*","access":"[^"]*","result":"ENOENT"' ||
    { echo "$g"; fail "the failed io_uring open of /tmp/obs/uring-missing.txt (ENOENT) is missing"; }
echo "$flat" | grep -q '"result":"EAGAIN"' && { echo "$g"; fail "an open is recorded with EAGAIN"; }
# Opens the kernel makes to exec a binary are exec edges, never open edges (the pattern matches an
# open edge: checked on data.txt first).
open_edge() { echo "$flat" | grep -q "\"kind\":\"open\",\"source\":\"[^\"]*\",\"target\":\"[^\"]*\",\"source_label\":\"[^\"]*\",\"target_label\":\"$1\""; }
open_edge /tmp/obs/data.txt || { echo "$g"; fail "no open edge to /tmp/obs/data.txt"; }
open_edge /bin/busybox && { echo "$g"; fail "the exec of /bin/busybox was recorded as an open"; }
# (Nothing listens on port 7. The edge's result is what the kernel's connect returned to io_uring,
# which tries without blocking first: EINPROGRESS or ECONNREFUSED, depending on when the loopback
# reset arrives; no syscall hook sees this connect at all.)
echo "ok: io_uring connect results: $(echo "$flat" | grep -o '"target_label":"127.0.0.1:7/tcp"[^}]*"result":"[A-Z0-9a-z]*"' | sed 's/.*"result"://' | tr '\n' ' ')"
# Name changes, seen in the kernel's security_path_* hooks with the names resolved: each name is a
# write edge that says which change (shell: mv, ln, rm, mkfifo; truncate(2) by path; io_uring's
# RENAMEAT, which no syscall hook sees); rmdir is not one.
name_edge() { echo "$flat" | grep -q "\"target_label\":\"$1\",\"actor\":\"[^\"]*\",\"access\":\"$2\",\"result\":\"$3\"" ||
    { echo "$g"; fail "no $2 edge ($3) to $1"; }; }
name_edge /tmp/obs/tmp.1 write,rename-from ok
name_edge /tmp/obs/dump.rdb write,rename-to ok
name_edge /tmp/obs/dump.rdb write,link-from ok
name_edge /tmp/obs/hard write,link-to ok
name_edge /tmp/obs/hard write,unlink ok
name_edge /tmp/obs/fifo write,create ok
name_edge /tmp/obs/trunc.txt write,truncate ok
name_edge /tmp/obs/u.1 write,rename-from ok
name_edge /tmp/obs/u.2 write,rename-to ok
echo "$g" | grep -q '"/tmp/obs/sub"' && { echo "$g"; fail "rmdir was recorded as a name change"; }
# The shell's create of tmp.1 is the open's edge only (open(O_CREAT) passes security_path_mknod too).
echo "$flat" | grep -q '"target_label":"/tmp/obs/tmp.1","actor":"[^"]*","access":"write,create","result"' &&
    { echo "$g"; fail "the create of tmp.1 by open was recorded twice (as an mknod)"; }
# io_uring's SENDMSG and SEND with a destination reach the socket layer past every syscall hook:
# seen where io_uring issues them, as datagrams sent without connect.
for port in 5354 5355; do
    echo "$flat" | grep -q "\"target_label\":\"127.0.0.1:$port/udp\",\"actor\":\"[^\"]*\",\"access\":\"udp,send\",\"result\":\"ok\"" ||
        { echo "$g"; fail "no udp,send edge to 127.0.0.1:$port from io_uring's $( [ $port = 5354 ] && echo SENDMSG || echo SEND )"; }
done
echo "ok: io_uring's SENDMSG and SEND with a destination are datagram sends"
# A 32-bit program's sends (send32: sendto by socketcall to 5360, sendmsg to 5361, sendmmsg to 5362
# and 5363, messages in the 32-bit layout) never pass the 64-bit syscalls: seen in the functions
# both share. Enforcement decides them in socket_sendmsg, so observation must learn them.
for port in 5360 5361 5362 5363; do
    echo "$flat" | grep -q "\"target_label\":\"127.0.0.1:$port/udp\",\"actor\":\"[^\"]*send32\",\"access\":\"udp,send\",\"result\":\"ok\"" ||
        { echo "$g"; fail "no udp,send edge to 127.0.0.1:$port from the 32-bit send32"; }
done
# A 64-bit sendmsg that sets the kernel's 32-bit mark itself is refused (EINVAL), and its message,
# in the 64-bit layout, names the destination all the same.
echo "$flat" | grep -q '"target_label":"127.0.0.1:5364/udp","actor":"[^"]*","access":"udp,send","result":"EINVAL"' ||
    { echo "$g"; fail "no failed (EINVAL) udp,send edge to 127.0.0.1:5364 from a 64-bit sendmsg with MSG_CMSG_COMPAT"; }
echo "ok: a 32-bit program's sendto (socketcall), sendmsg and sendmmsg are datagram sends"
# Unix datagrams are recorded where the kernel found the receiver (security_unix_may_send), by the
# path it is bound to, which enforcement's unix_may_send matches: not the symlink (or relative name)
# the sender wrote. A send that found no receiver keeps the name it was given, with its errno.
unix_edge() { echo "$flat" | grep -q "\"target_label\":\"unix:$1\",\"actor\":\"[^\"]*\",\"access\":\"unix-dgram,send\",\"result\":\"$2\"" ||
    { echo "$g"; fail "no unix-dgram,send edge ($2) to unix:$1"; }; }
unix_edge /tmp/obs/dg.sock ok
unix_edge @stance-obs-dg ok
unix_edge /tmp/obs/nobody.sock '[A-Z]*'
echo "$g" | grep -q 'dg-link' && { echo "$g"; fail "a unix datagram was recorded by the symlink it was sent through"; }
echo "ok: unix datagrams name their receiver's bound path (or abstract name)"
kill "$dg1" "$dg2"
touch /tmp/obs-early-go
wait "$early" || fail "the early unix datagram sender failed: $(cat /tmp/obs-early)"
i=0
until stance graph vmearly --db "$db" -o json 2>/dev/null | tr -d ' \n' |
    grep -q '"target_label":"unix:/tmp/obs/early.sock","actor":"[^"]*","access":"unix-dgram,send","result":"ok"'; do
    i=$((i + 1))
    [ "$i" -gt 150 ] && { stance graph vmearly --db "$db" -o json; fail "no unix-dgram,send edge from the socket connected before the daemon started"; }
    sleep 0.2
done
kill "$early_srv"
echo "ok: a unix datagram socket connected before the daemon started is learned by its sends"
# An open with O_TRUNC of an existing file is one edge, the open's (before 6.2 it passes
# security_path_truncate too, which must not add a second record).
echo "$flat" | grep -q '"target_label":"/tmp/obs/trunc2.txt","actor":"[^"]*","access":"write,create,truncate","result":"ok"' ||
    { echo "$g"; fail "no open edge (write,create,truncate) to /tmp/obs/trunc2.txt"; }
[ "$(echo "$flat" | grep -o '"target_label":"/tmp/obs/trunc2.txt"' | wc -l)" -eq 1 ] ||
    { echo "$g"; fail "the O_TRUNC open of /tmp/obs/trunc2.txt was recorded as more than its open"; }
echo "ok: renames (io_uring's too), links, unlinks, truncate by path and mkfifo are write edges to each name"
echo "ok: graph has /tmp/obs/data.txt, /tmp/obs/missing.txt (ENOENT), /tmp/obs/uring.txt (io_uring), CAP_CHOWN, 127.0.0.1:9/tcp, 127.0.0.1:7/tcp (io_uring) and 127.0.0.1:5353/udp"

kill -TERM "$pid"
wait "$pid"
rc=$?
[ "$rc" -eq 0 ] || fail "daemon exited with $rc on SIGTERM"
echo "ok: daemon stopped cleanly"
# The 40 reads of repeat.txt (one cat binary, one file: one dedup key) fell in one dedup window: the
# kernel reported the first and held the other 39, which the clean stop added to the edge.
flat=$(stance graph vmobs --db "$db" -o json | tr -d ' \n')
echo "$flat" | grep -q '"target_label":"/tmp/obs/repeat.txt"[^}]*"count":40[,}]' ||
    { echo "$flat" | grep -o '"target_label":"/tmp/obs/repeat.txt"[^}]*'; fail "the open edge to /tmp/obs/repeat.txt should count 40 after the stop"; }
echo "ok: 40 repeated reads counted 40 after the clean stop"
