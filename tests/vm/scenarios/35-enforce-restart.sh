#!/bin/sh
# Enforcement outlives its daemon: `kill -9` the driver while a workload is enforced and the denies
# hold (pinned links keep the programs attached, pinned maps keep the policy); a new driver adopts
# the pins (same policy, same revision, one generation of links), keeps enforcing, and releasing the
# workload allows it again.
# Two driver starts under software emulation.
# vmtest-timeout: 240
. /scenarios/lib/enforce.sh

mkdir -p /tmp/rs
echo secret >/tmp/rs/secret
cg=$(mkcg enforce-restart)
cat >/tmp/restart-policy.json <<JSON
{"executables": [], "network": [], "unix": [], "capabilities": [], "ptrace": "none",
 "files": [ $LIB_RULES ]}
JSON

start_driver --policy /tmp/restart-policy.json --cgroup "$cg" --modes file=enforce --policy-id 35
rev=$(sed -n 's/^applied: policy 35 rev //p' "$DRV_OUT")
# The pin directory of the current map layout (enforce-v<STANCE_ENFORCE_ABI_VERSION>).
PIN=$(ls -d /sys/fs/bpf/stance/enforce-v*)
[ -d "$PIN" ] || fail "not one enforce-v<N> pin directory: '$PIN'"
expect EPERM "denied while the driver runs" in_cg "$cg" enforce-probe open /tmp/rs/secret
echo "pinned: $(ls $PIN/links/*/ | tr '\n' ' ')"
kill9_driver
ok "driver killed with SIGKILL"
expect_linked yes stance_file_open stance_bprm_check
expect EPERM "still denied after kill -9" in_cg "$cg" enforce-probe open /tmp/rs/secret
expect ok "still allowed outside" enforce-probe open /tmp/rs/secret

start_driver
grep -q '^status: adopted 1' "$DRV_OUT" || fail "the new driver did not adopt the policy"
grep -q "^policy: 35 rev $rev " "$DRV_OUT" || fail "adopted policy is not 35 rev $rev"
ok "adopted policy 35 rev $rev"
gens=$(ls $PIN/links | wc -l)
[ "$gens" -eq 1 ] || fail "$gens link generations pinned, expected 1 (the old one retired)"
ok "one link generation pinned (the new driver's)"
expect EPERM "still denied by the adopting driver" in_cg "$cg" enforce-probe open /tmp/rs/secret
wait_verdict "^verdict: deny file /tmp/rs/secret "
stop_driver

stance-enforce-test release --policy-id 35 >/dev/null || fail "release failed"
expect ok "allowed after release" in_cg "$cg" enforce-probe open /tmp/rs/secret
# No workload has a policy any more: nothing keeps the deciding programs attached.
expect_linked no stance_file_open stance_bprm_check
stance-enforce-test purge >/dev/null || fail "purge failed"
[ -e "$PIN" ] && fail "pins left after purge"
ok "no pins left"
rmdir "$cg"
echo "ok: scenario done"
