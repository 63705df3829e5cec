#!/bin/sh
# A workload cannot leave its policy by moving between cgroups: a cgroup it creates inside its own
# gets its policy from the kernel at mkdir (and follows policy updates); moving a task into a cgroup
# outside the workload (a write open of that cgroup's cgroup.procs) is refused even when the file
# domain is only observed; releasing the workload releases its child cgroups too.
. /scenarios/lib/enforce.sh

cg=$(mkcg enforce-cgroups)
enforce-probe serve-tcp 8037 >/dev/null 2>&1 &
srv=$!
policy() {
    cat >/tmp/cgroups-policy.json <<JSON
{"executables": [], "files": [], "unix": [], "capabilities": [], "ptrace": "none",
 "network": [ $1 ]}
JSON
}
policy ""
start_driver --policy /tmp/cgroups-policy.json --cgroup "$cg" --modes network=enforce --policy-id 37
expect EPERM "connect from the workload" in_cg "$cg" enforce-probe connect 127.0.0.1 8037
out=$(in_cg "$cg" sh -c "mkdir $cg/child && echo \$\$ > $cg/child/cgroup.procs && exec enforce-probe connect 127.0.0.1 8037" 2>&1)
[ "$out" = EPERM ] || fail "connect after moving into a cgroup it made itself: $out"
ok "a cgroup the workload made itself is under its policy: EPERM"
expect ok "moving into its own cgroups is allowed" in_cg "$cg" enforce-probe open "$cg/child/cgroup.procs" w
expect EPERM "moving a task out of the workload" in_cg "$cg" enforce-probe open /sys/fs/cgroup/cgroup.procs w
wait_verdict "^verdict: deny process /sys/fs/cgroup/cgroup.procs "
expect ok "outside the workload, the same move is allowed" enforce-probe open /sys/fs/cgroup/cgroup.procs w
stop_driver

# A new revision allowing the port reaches the child cgroup as well.
policy '{"net": "127.0.0.1/32", "port_lo": 8037, "port_hi": 8037, "protocol": "tcp"}'
start_driver --policy /tmp/cgroups-policy.json --cgroup "$cg" --modes network=enforce --policy-id 37
expect ok "the updated policy in the workload's cgroup" in_cg "$cg" enforce-probe connect 127.0.0.1 8037
expect ok "the updated policy in the cgroup it made" in_cg "$cg/child" enforce-probe connect 127.0.0.1 8037
stop_driver

policy ""
start_driver --policy /tmp/cgroups-policy.json --cgroup "$cg" --modes network=enforce --policy-id 37
expect EPERM "and back" in_cg "$cg/child" enforce-probe connect 127.0.0.1 8037
stop_driver
stance-enforce-test release --policy-id 37 >/dev/null || fail "release failed"
expect ok "released with the workload" in_cg "$cg/child" enforce-probe connect 127.0.0.1 8037

kill $srv
stance-enforce-test purge >/dev/null || fail "purge failed"
rmdir "$cg/child" "$cg"
echo "ok: scenario done"
