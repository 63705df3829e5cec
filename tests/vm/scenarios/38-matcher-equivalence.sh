#!/bin/sh
# The userspace matcher (stance::enforce::matcher, used to replay policies) gives exactly the kernel
# enforcer's answers: one policy with every rule kind (exact, recursive and one-level directory
# rules, /proc pid wildcards, fromSource exec rules with a binary and a memfd source, network
# prefixes and port ranges, unix sockets, capabilities); each case is asked of the matcher
# (`stance-enforce-test match`), then performed inside the enforced cgroup, and the two answers must
# be the same for every case. Deny reports of procfs paths show the pid as the lookup did: "*".
. /scenarios/lib/enforce.sh

E=/tmp/eq
mkdir -p $E/kids/sub $E/kidsx $E/tree/a/b || fail "mkdir"
for f in exact rw other kids/f kids/sub/g kidsx/f tree/a/b/f; do echo data >$E/$f; done
for b in src-a src-b target; do cp "$PROBE" $E/$b; done
cg=$(mkcg matcher-eq)
ident() { stat -c '"dev": %d, "ino": %i' "$1"; }

pids=
for p in 8040 8041 8045 9000; do
    enforce-probe serve-tcp $p >/dev/null 2>&1 &
    pids="$pids $!"
done
for n in $E/ok.sock $E/no.sock @eq-ok @eq-no; do
    enforce-probe serve-unix $n >/dev/null 2>&1 &
    pids="$pids $!"
done
sleep 1

cat >/tmp/eq-policy.json <<JSON
{"executables": [
    {"path": "$PROBE"},
    {"path": "$E/src-a"},
    {"path": "$E/src-b"},
    {"path": "$E/target", $(ident $E/target), "from": ["$E/src-a", "memfd:eqsrc"]},
    {"path": "memfd:eqsrc"},
    {"path": "memfd:other"}
 ],
 "files": [
    {"path": "$E/exact", "read": true},
    {"path": "$E/rw", "read": true, "write": true},
    {"path": "$E/tree", "prefix": true, "read": true},
    {"path": "$E/kids", "children": true, "read": true, "write": true},
    {"path": "$E/src-a", "read": true},
    {"path": "/proc/*/stat", "read": true},
    {"path": "/proc/1/task/1/status", "read": true},
    $LIB_RULES
 ],
 "network": [
    {"net": "127.0.0.0/8", "port_lo": 8040, "port_hi": 8041, "protocol": "tcp"},
    {"net": "127.0.0.1/32", "port_lo": 9000, "port_hi": 9000, "protocol": "tcp"},
    {"net": "127.0.0.0/8", "port_lo": 5353, "port_hi": 5353, "protocol": "udp"}
 ],
 "unix": ["$E/ok.sock", "@eq-ok"],
 "capabilities": [0],
 "ptrace": "none"}
JSON

# PROGRAM ACTION ARGS: what enforce-probe (or a copy of it) does inside the workload.
cat >/tmp/eq-cases <<CASES
# exact rules, read and write apart
enforce-probe open $E/exact r
enforce-probe open $E/exact w
enforce-probe open $E/rw rw
enforce-probe open $E/other r
# recursive directory rule: the directory and every depth, read only
enforce-probe open $E/tree r
enforce-probe open $E/tree/a/b/f r
enforce-probe open $E/tree/a/b/f w
# one-level rule: direct children only, not the directory, not deeper, not a longer name
enforce-probe open $E/kids/f r
enforce-probe open $E/kids/new creat
enforce-probe open $E/kids r
enforce-probe open $E/kids/sub/g r
enforce-probe open $E/kids/sub r
enforce-probe open $E/kidsx/f r
# procfs: its own pid, another process's, a thread's, a literal-pid rule
enforce-probe open /proc/self/stat r
enforce-probe open /proc/1/stat r
enforce-probe open /proc/self/status r
enforce-probe open /proc/thread-self/stat r
enforce-probe open /proc/thread-self/status r
enforce-probe open /proc/1/task/1/status r
enforce-probe open /proc/1/status r
# fromSource: the target only from src-a or the memfd eqsrc
$E/src-a exec $E/target
$E/src-b exec $E/target
enforce-probe exec $E/target
enforce-probe exec $E/src-b
enforce-probe memfd-exec $E/src-a eqsrc exec $E/target
enforce-probe memfd-exec $E/src-a other exec $E/target
enforce-probe memfd-exec $E/src-a evil
# network prefixes and port ranges (the /32 also has the /8's ports)
enforce-probe connect 127.0.0.1 8040
enforce-probe connect 127.0.0.1 8041
enforce-probe connect 127.0.0.1 8045
enforce-probe connect 127.0.0.1 9000
enforce-probe connect 127.0.0.2 9000
enforce-probe connect ::ffff:127.0.0.1 9000
enforce-probe connect ::ffff:127.0.0.2 9000
enforce-probe udp-send 127.0.0.7 5353
enforce-probe udp-send 127.0.0.7 5354
enforce-probe unix-connect $E/ok.sock
enforce-probe unix-connect $E/no.sock
enforce-probe unix-connect @eq-ok
enforce-probe unix-connect @eq-no
# capabilities
enforce-probe chown $E/kids/f 1234
enforce-probe raw-socket
CASES

stance-enforce-test match --policy /tmp/eq-policy.json --cases /tmp/eq-cases >/tmp/eq-verdicts 2>&1 ||
    { cat /tmp/eq-verdicts; fail "the matcher refused the policy or a case"; }

start_driver --policy /tmp/eq-policy.json --cgroup "$cg" --modes all=enforce --policy-id 38
expect_status file bpf-lsm

n=0
allowed=0
while read -r want prog rest; do
    # shellcheck disable=SC2086 # the case's words are the command line
    got=$(in_cg "$cg" $prog $rest </dev/null 2>&1)
    case "$got" in
        ok) got=allow ;;
        EPERM) got=deny ;;
        *) fail "case '$prog $rest': neither allowed nor denied by policy: '$got'" ;;
    esac
    [ "$got" = "$want" ] || fail "case '$prog $rest': matcher says $want, kernel says $got"
    ok "$want (both): $prog $rest"
    n=$((n + 1))
    [ "$want" = allow ] && allowed=$((allowed + 1))
done </tmp/eq-verdicts
[ "$n" -eq "$(grep -c '^[^#]' /tmp/eq-cases)" ] || fail "only $n cases were compared"
[ "$allowed" -gt 0 ] && [ "$allowed" -lt "$n" ] || fail "the cases do not mix allowed and denied"
ok "matcher and kernel agree on all $n cases ($allowed allowed)"

# A procfs deny shows the path as looked up.
wait_verdict "^verdict: deny file /proc/\\*/status "
wait_verdict "^verdict: deny process $E/target exe=$E/src-b .*from_source=1"
wait_verdict "^verdict: deny process memfd:evil .*from_source=0"

stop_driver
for p in $pids; do kill "$p"; done
stance-enforce-test purge >/dev/null || fail "purge failed"
rmdir "$cg"
echo "ok: scenario done"
