#!/bin/sh
# Network domain in enforce: connect (io_uring's CONNECT too) and unconnected datagrams are decided
# in lsm/socket_connect and lsm/socket_sendmsg from the kernel's copy of the address, IPv4-mapped IPv6
# normalised; unix sockets by the peer the kernel found (lsm/unix_stream_connect), so a symlink to a
# denied socket is denied and abstract names are rules of their own.
. /scenarios/lib/enforce.sh

cg=$(mkcg enforce-net)
pids=
for p in 8033 8034; do
    enforce-probe serve-tcp $p >/dev/null 2>&1 &
    pids="$pids $!"
done
for n in /tmp/ok.sock /tmp/no.sock @stance-ok @stance-no; do
    enforce-probe serve-unix $n >/dev/null 2>&1 &
    pids="$pids $!"
done
ln -sf /tmp/no.sock /tmp/link.sock
sleep 1

cat >/tmp/net-policy.json <<JSON
{"executables": [], "files": [], "capabilities": [], "ptrace": "none",
 "network": [
    {"net": "127.0.0.1/32", "port_lo": 8033, "port_hi": 8033, "protocol": "tcp"},
    {"net": "127.0.0.0/8", "port_lo": 5353, "port_hi": 5353, "protocol": "udp"}
 ],
 "unix": ["/tmp/ok.sock", "@stance-ok"]}
JSON

start_driver --policy /tmp/net-policy.json --cgroup "$cg" --modes network=enforce --policy-id 33
expect_status network bpf-lsm
expect ok "connect to the allowed port" in_cg "$cg" enforce-probe connect 127.0.0.1 8033
expect EPERM "connect to a port it never used" in_cg "$cg" enforce-probe connect 127.0.0.1 8034
wait_verdict "^verdict: deny network 127.0.0.1:8034/tcp exe=$PROBE .*send=0 "
expect EPERM "the IPv4-mapped IPv6 form of it" in_cg "$cg" enforce-probe connect ::ffff:127.0.0.1 8034
expect ok "the IPv4-mapped form of the allowed one" in_cg "$cg" enforce-probe connect ::ffff:127.0.0.1 8033
expect EPERM "io_uring CONNECT to it" in_cg "$cg" enforce-probe uring-connect 127.0.0.1 8034
expect ok "io_uring CONNECT to the allowed port" in_cg "$cg" enforce-probe uring-connect 127.0.0.1 8033
expect EPERM "another loopback address" in_cg "$cg" enforce-probe connect 127.0.0.2 8033
expect EPERM "IPv6 loopback" in_cg "$cg" enforce-probe connect ::1 8033
expect EPERM "UDP sendto without connect" in_cg "$cg" enforce-probe udp-send 127.0.0.1 8034
wait_verdict "^verdict: deny network 127.0.0.1:8034/udp .*send=1 "
expect EPERM "UDP sendto, IPv4-mapped" in_cg "$cg" enforce-probe udp-send ::ffff:127.0.0.1 8034
expect ok "UDP sendto an allowed destination" in_cg "$cg" enforce-probe udp-send 127.0.0.9 5353
expect ok "unix socket in the policy" in_cg "$cg" enforce-probe unix-connect /tmp/ok.sock
expect EPERM "unix socket not in it" in_cg "$cg" enforce-probe unix-connect /tmp/no.sock
wait_verdict "^verdict: deny network unix:/tmp/no.sock "
expect EPERM "a symlink to that socket" in_cg "$cg" enforce-probe unix-connect /tmp/link.sock
expect ok "abstract socket in the policy" in_cg "$cg" enforce-probe unix-connect @stance-ok
expect EPERM "abstract socket not in it" in_cg "$cg" enforce-probe unix-connect @stance-no
wait_verdict "^verdict: deny network unix:@stance-no "

expect ok "outside: connect" enforce-probe connect 127.0.0.1 8034
expect ok "outside: IPv4-mapped" enforce-probe connect ::ffff:127.0.0.1 8034
expect ok "outside: sendto" enforce-probe udp-send 127.0.0.1 8034
expect ok "outside: unix" enforce-probe unix-connect /tmp/no.sock
expect ok "outside: abstract" enforce-probe unix-connect @stance-no

stop_driver
kill $pids
stance-enforce-test purge >/dev/null || fail "purge failed"
rmdir "$cg"
echo "ok: scenario done"
