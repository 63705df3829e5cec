"""The observation-in-a-VM part of BENCHMARKS.md's generated section: reads the console output of the
VM that tests/bench/run.sh boots for scenario 42 (tests/vm/scenarios/42-observe-bench.sh) and writes
its figures. That VM's kernel allows fexit, which this host's kernel refuses, so this is where the
daemon's cost on a kernel that does not need syscall tracepoints is measured, next to the floor:
empty programs on the same hooks (tests/bench/floor-fexit.bpf.c). run.sh boots it on QEMU's
instruction clock (`stance-vmtest --icount`), where a guest ns is one executed instruction, so the
workload's CPU time per operation is its instruction count, the same in every run; without it the
guest clock is the busy host's and only ratios measured in that one run mean something."""

import statistics

from enforce_report import console, fmt_ns

OVERHEAD_TARGET = 0.03
# The runs without the daemon are the yardstick: when they differ by more than this between pairs,
# the emulated machine's speed moved (a busy host) more than any overhead could, and no verdict is given.
BASELINE_SPREAD_MAX = 0.20
# What stance-vmtest prints when the guest runs on QEMU's instruction clock (tests/vm/src/main.rs).

LOOPS = {
    "open": "openat+close (4 files, round-robin)",
    "forkexec": "fork + execve /bin/true + wait",
    "connect": "TCP connect to loopback + close",
}


def parse(path):
    """Pairs per loop [(without ns, without cpu, with ns, with cpu, floor ns or None, floor cpu or None)],
    setup, hooks, kernel, passed, whether the guest clock counted instructions, and from the stats
    run: ns per operation per loop, [(loop, program, runs, run time ns)]."""
    pairs, setup, hooks = {}, {}, ""
    op_ns, bpf = {}, []
    kernel, passed, lines, icount = console(path, "42-observe-bench")
    for words, text in lines:
        # Older runs printed no floor (7 words); the floor's two figures follow the daemon's.
        if words[0] == "obs-bench-pair:" and len(words) in (7, 9):
            figures = [float(x) for x in words[3:]] + [None, None]
            pairs.setdefault(words[1], []).append(tuple(figures[:6]))
        elif words[0] == "obs-bench-setup:":
            setup = dict(kv.split("=", 1) for kv in words[1:] if "=" in kv)
        elif words[0] == "obs-bench-hooks:":
            hooks = text.split(":", 1)[1].strip()
        elif words[0] == "obs-bench-op:" and len(words) == 3:
            op_ns[words[1]] = float(words[2])
        elif words[0] == "obs-bench-bpf:" and len(words) == 5:
            bpf.append((words[1], words[2], int(words[3]), int(words[4])))
    return pairs, setup, hooks, kernel, passed, icount, op_ns, bpf


def pct(x):
    return f"{x * 100:+.1f}%"


def section(w, summary, path):
    w(f"### Observation overhead in a VM with fexit (target: ≤ {OVERHEAD_TARGET:.0%} slowdown)")
    w("")
    try:
        pairs, setup, hooks, kernel, passed, icount, op_ns, bpf = parse(path)
    except OSError as e:
        w(f"Not measured: cannot read the VM's output ({e}).")
        w("")
        summary.append("observation in a VM: not measured")
        return
    if not pairs:
        w("Not measured: the VM printed no `obs-bench-pair:` lines.")
        w("")
        summary.append("observation in a VM: not measured")
        return
    def fmt(ns):
        # Under icount a guest ns is one instruction: the figures are counts, not times.
        return f"{ns:,.0f}" if icount else fmt_ns(ns)

    unit = "guest instructions" if icount else "emulated CPU time"
    clock = ("on QEMU's instruction clock (`-icount shift=0,sleep=off`: 1 ns of guest time = 1 executed guest "
             "instruction, so the workload's CPU time per operation is the instructions it executed, user and "
             "kernel, the same in every run to a fraction of a percent)" if icount else
             "on the host's clock (emulated times move with the load of the host: only ratios within this "
             "table mean anything)")
    w(f"Scenario `42-observe-bench` alone in one VM ({kernel or 'kernel unknown'}, QEMU software emulation, "
      f"one vCPU), {clock}. Its kernel lets the daemon hook opens and network calls with fexit instead of syscall "
      f"tracepoints (hooks in use: {hooks or 'not reported'}). The loops of the overhead table above, always under "
      f"`stance launch`, in three phases per pair: without the daemon (A), with only empty programs on the "
      f"daemon's hooks (F, the floor: `tests/bench/floor-fexit.bpf.c`, what the hooks cost before any program "
      f"does work) and with the daemon running (B); the floor loader and the daemon are started and stopped "
      f"for each pair, {setup.get('pairs', '?')} pairs in the orders A F B and B F A by turns. Per pair, "
      f"slowdown = F/A − 1 and B/A − 1 of the workload's CPU time (which leaves out time it waits while the "
      f"daemon runs on the VM's one CPU"
      + (", and, under icount, the idle time the guest clock skips" if icount else "")
      + "); the figures are medians over the pairs and the target is judged on the daemon's CPU slowdown. "
      f"Per operation: the median of the workload's CPU time per operation, in {unit}."
      + ("" if passed else " **The scenario did not pass**: see the run's output."))
    w("")
    w("| loop | ops per run | A: no daemon, per op | F: floor, per op | B: daemon, per op | floor slowdown (CPU) "
      "| daemon slowdown (CPU) | target (daemon, CPU) | daemon slowdown (wall) | daemon slowdown per pair (CPU) |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |")
    for loop, label in LOOPS.items():
        got = pairs.get(loop, [])
        if not got:
            w(f"| {label} | | | | | | not measured | | | |")
            continue
        a_cpu = [p[1] for p in got]
        b_cpu = [p[3] for p in got]
        f_cpu = [p[5] for p in got if p[5] is not None]
        cpu = [p[3] / p[1] - 1 for p in got]
        wall = [p[2] / p[0] - 1 for p in got]
        slow_wall, slow_cpu = statistics.median(wall), statistics.median(cpu)
        floor = statistics.median(p[5] / p[1] - 1 for p in got if p[5] is not None) if f_cpu else None
        spread = max(a_cpu) / min(a_cpu) - 1
        verdict = "met" if slow_cpu <= OVERHEAD_TARGET else "missed"
        if spread > BASELINE_SPREAD_MAX:
            verdict = f"inconclusive (runs without the daemon differ by {spread:.0%})"
        n = int(setup.get(loop, 0) or 0)
        w(f"| {label} | {n:,} | {fmt(statistics.median(a_cpu))} "
          f"| {fmt(statistics.median(f_cpu)) if f_cpu else 'not measured'} | {fmt(statistics.median(b_cpu))} "
          f"| {pct(floor) if floor is not None else 'not measured'} | {pct(slow_cpu)} | **{verdict}** "
          f"| {pct(slow_wall)} | {', '.join(pct(p) for p in cpu)} |")
        summary.append(f"observation in a VM (fexit{', icount' if icount else ''}), {loop}: {pct(slow_cpu)} CPU "
                       f"(floor {pct(floor) if floor is not None else 'not measured'}), {pct(slow_wall)} wall, "
                       f"median over {len(got)} pairs (target ≤ {OVERHEAD_TARGET:.0%}: {verdict})")
    w("")
    if bpf and op_ns:
        w("Where the time goes: one more run of each loop with the daemon and `kernel.bpf_stats_enabled = 1`: per "
          "program of the daemon that ran, its runs during that loop (every task of the VM), its mean run time, "
          "and its run time per operation of the loop as a share of the operation's wall time (both "
          + ("guest time, that is instructions" if icount else "emulated") + ", measured in the same run; "
          "the trampoline that calls a program is not in its run time).")
        w("")
        what = " (instructions)" if icount else ""
        w(f"| loop | program | runs | mean run time{what} | per operation{what} | share of an operation |")
        w("| --- | --- | ---: | ---: | ---: | ---: |")
        for loop, prog, runs, ns in bpf:
            n = int(setup.get(loop, 0) or 0)
            per_op = ns / n if n else 0
            share = per_op / op_ns[loop] if op_ns.get(loop) else 0
            w(f"| {loop} | `{prog}` | {runs:,} | {fmt(ns / runs) if runs else '-'} | {fmt(per_op)} "
              f"| {share * 100:.1f}% |")
        w("")
