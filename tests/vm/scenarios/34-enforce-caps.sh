#!/bin/sh
# Capabilities in enforce (lsm/capable, only for the task's own credentials): CAP_NET_RAW for a raw
# socket and CAP_CHOWN are refused unless the policy lists them; a new revision that adds one takes
# effect at once.
. /scenarios/lib/enforce.sh

cg=$(mkcg enforce-caps)
touch /tmp/capf
policy() {
    cat >/tmp/caps-policy.json <<JSON
{"executables": [], "files": [], "network": [], "unix": [], "ptrace": "none", "capabilities": [$1]}
JSON
}

policy ""
start_driver --policy /tmp/caps-policy.json --cgroup "$cg" --modes capabilities=enforce --policy-id 34
expect_status capabilities bpf-lsm
expect EPERM "CAP_NET_RAW (raw socket)" in_cg "$cg" enforce-probe raw-socket
wait_verdict "^verdict: deny capabilities CAP_NET_RAW exe=$PROBE "
expect EPERM "CAP_CHOWN" in_cg "$cg" enforce-probe chown /tmp/capf 1000
wait_verdict "^verdict: deny capabilities CAP_CHOWN "
expect ok "outside: raw socket" enforce-probe raw-socket
expect ok "outside: chown" enforce-probe chown /tmp/capf 1000
stop_driver

# A new revision allowing CAP_NET_RAW (13), applied over the adopted one.
policy 13
start_driver --policy /tmp/caps-policy.json --cgroup "$cg" --modes capabilities=enforce --policy-id 34
expect ok "CAP_NET_RAW once the policy lists it" in_cg "$cg" enforce-probe raw-socket
expect EPERM "CAP_CHOWN still refused" in_cg "$cg" enforce-probe chown /tmp/capf 0
stop_driver

stance-enforce-test purge >/dev/null || fail "purge failed"
rmdir "$cg"
echo "ok: scenario done"
