#!/bin/sh
# What enforcement costs, measured in one VM run: open+close and fork+exec loops in a workload whose
# file and process domains are enforced with 1,000 file rules, against the same loops with no policy
# (observe). Batches alternate between the two cgroups round by round (A/B interleaved), and the
# median of the per-round ratios is reported. Software emulation distorts absolute times: only the
# ratios mean something. Prints `bench:` lines; fails only if an enforced operation is refused.
#   open           the same file each time (a decision-cache hit after the first)
#   open-uncached  a file with two links (never cached: path walk, hash, rule lookups every time)
#   exec           fork + exec of an allowed binary + wait
. /scenarios/lib/enforce.sh

B=/tmp/bench
mkdir -p $B
echo data >$B/target
echo data >$B/linked
ln -f $B/linked $B/linked2
enf=$(mkcg bench-enforced)
obs=$(mkcg bench-observed)
rules=$(i=0; while [ $i -lt 995 ]; do printf '{"path": "%s/r%d", "read": true}, ' $B $i; i=$((i + 1)); done)
# glibc reads /proc/self/maps.
cat >/tmp/bench-policy.json <<JSON
{"executables": [ {"path": "$PROBE"} ], "network": [], "unix": [], "capabilities": [], "ptrace": "none",
 "files": [ $rules {"path": "$B/target", "read": true}, {"path": "$B/linked", "read": true},
            {"path": "/proc", "prefix": true, "read": true}, $LIB_RULES ]}
JSON
start_driver --policy /tmp/bench-policy.json --cgroup "$enf" --modes file=enforce,process=enforce --policy-id 39 --timing
grep '^timing:' "$DRV_OUT"

bench() {
    what=$1
    shift
    out=$(enforce-probe bench-ab "$@" "$enf" "$obs") || { echo "$out"; fail "bench $what: refused or failed"; }
    echo "$out" | sed "s/^/  $what /"
    echo "bench: $what enforced/observe $(echo "$out" | sed -n 's/^ratio-median: //p')"
}
bench open open $B/target 3000 7
bench open-uncached open $B/linked 3000 7
bench exec exec "$PROBE" 20 7

no_verdict "^verdict: deny "
ok "no enforced operation was refused"
stop_driver
stance-enforce-test purge >/dev/null || fail "purge failed"
rmdir "$enf" "$obs"
echo "ok: scenario done"
