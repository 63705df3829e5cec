#!/bin/sh
# What enforcement costs, measured in one VM run: open+close and fork+exec loops in a workload whose
# file and process domains are enforced with 1,000 file rules, against the same loops in a workload
# in observe mode (no policy; the enforcer's programs are attached and return early for it).
# Software emulation distorts absolute times: only the ratios mean something.
#   open           the same file each time (a decision-cache hit after the first)
#   open-uncached  a file with two links (never cached: path walk, hash, rule lookups every time)
#   exec           fork + exec of an allowed binary + wait
# Each pair times one batch in each workload, each batch in a fresh child moved into its cgroup;
# odd pairs run the enforced batch first, even pairs the observe batch first, so neither side is
# always the one that runs on a warm cache. Prints `bench-pair: LOOP PAIR ENFORCED_NS OBSERVE_NS`
# per pair and `bench: LOOP enforced/observe MEDIAN (N pairs)`. Fails if an enforced operation is
# refused: this is also the test that a workload enforced with 1,000 rules keeps working.
#
# `make bench` (tests/bench/run.sh) runs this scenario alone, on one kernel, with more pairs:
#   STANCE_BENCH_PAIRS  pairs per loop (default 3)
#   STANCE_BENCH_OPENS  opens per batch (default 1000)
#   STANCE_BENCH_EXECS  fork+execs per batch (default 10)
#   STANCE_BENCH_BPF_STATS=1  afterwards, one more batch of each loop in each workload with
#       kernel.bpf_stats_enabled, printing `bench-bpf: LOOP enforced|observe PROGRAM RUNS RUN_TIME_NS`
#       per BPF program that ran (needs bpftool in the guest: pass it with --bin)
. /scenarios/lib/enforce.sh

PAIRS=${STANCE_BENCH_PAIRS:-3}
OPENS=${STANCE_BENCH_OPENS:-1000}
EXECS=${STANCE_BENCH_EXECS:-10}

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
n=$(grep -o '"path"' /tmp/bench-policy.json | wc -l)
[ "$n" -ge 1001 ] || fail "the policy has $n rules, expected 1,000 file rules and an executable"
start_driver --policy /tmp/bench-policy.json --cgroup "$enf" --modes file=enforce,process=enforce --policy-id 39 --timing
grep '^timing:' "$DRV_OUT"
echo "bench-setup: pairs=$PAIRS opens=$OPENS execs=$EXECS file_rules=$((n - 1))"

# pair LOOP KIND TARGET N I: pair number I of LOOP, appended to /tmp/bench-LOOP and printed.
# (Not in a pipe or $(...): `fail` must end the scenario, not a subshell.)
pair() {
    if [ $(($5 % 2)) -eq 1 ]; then set -- "$@" "$enf" "$obs"; else set -- "$@" "$obs" "$enf"; fi
    enforce-probe bench-ab "$2" "$3" "$4" 1 "$6" "$7" >/tmp/bench-out 2>&1 ||
        { cat /tmp/bench-out; fail "bench $1: refused or failed"; }
    ns=$(sed -n 's/^round 0: a \([0-9]*\) ns  b \([0-9]*\) ns .*/\1 \2/p' /tmp/bench-out)
    [ -n "$ns" ] || { cat /tmp/bench-out; fail "bench $1: unexpected output"; }
    [ $(($5 % 2)) -eq 1 ] || ns=$(echo "$ns" | awk '{print $2, $1}')
    echo "bench-pair: $1 $5 $ns" | tee -a "/tmp/bench-$1"
}

# bench LOOP KIND TARGET N: PAIRS pairs, then the median of their enforced/observe ratios.
bench() {
    i=1
    : >"/tmp/bench-$1"
    while [ $i -le "$PAIRS" ]; do
        pair "$@" $i
        i=$((i + 1))
    done
    median=$(awk '{print $4 / $5}' "/tmp/bench-$1" | sort -n |
        awk '{r[NR] = $1} END {print (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2}')
    echo "bench: $1 enforced/observe $median ($PAIRS pairs)"
}
bench open open $B/target "$OPENS"
bench open-uncached open $B/linked "$OPENS"
bench exec exec "$PROBE" "$EXECS"

if [ "${STANCE_BENCH_BPF_STATS:-0}" = 1 ]; then
    command -v bpftool >/dev/null || fail "STANCE_BENCH_BPF_STATS=1 needs bpftool in the guest (--bin)"
    . /scenarios/lib/bpfstats.sh
    echo 1 >/proc/sys/kernel/bpf_stats_enabled || fail "cannot enable kernel.bpf_stats_enabled"
    snap >/tmp/bpf-before
    grep -q . /tmp/bpf-before || fail "bpftool listed no programs"
    # One batch per loop and workload between two snapshots, so each program's runs are those of
    # one loop in one workload (and of whatever else ran in the VM meanwhile, bpftool included).
    for loop in open open-uncached exec; do
        for side in enforced observe; do
            if [ $side = enforced ]; then cg=$enf; else cg=$obs; fi
            case $loop in
                open) set -- bench-open $B/target "$OPENS" ;;
                open-uncached) set -- bench-open $B/linked "$OPENS" ;;
                exec) set -- bench-exec "$PROBE" "$EXECS" ;;
            esac
            in_cg "$cg" enforce-probe "$@" >/dev/null || fail "bpf stats: $loop ($side)"
            snap >/tmp/bpf-after
            awk -v what="$loop $side" 'NR == FNR { c[$1] = $3; t[$1] = $4; next }
                ($1 in c) && $3 > c[$1] { print "bench-bpf:", what, $2, $3 - c[$1], $4 - t[$1] }' \
                /tmp/bpf-before /tmp/bpf-after
            mv /tmp/bpf-after /tmp/bpf-before
        done
    done
    echo 0 >/proc/sys/kernel/bpf_stats_enabled
fi

no_verdict "^verdict: deny "
ok "no enforced operation was refused"
stop_driver
stance-enforce-test purge >/dev/null || fail "purge failed"
rmdir "$enf" "$obs"
echo "ok: scenario done"
