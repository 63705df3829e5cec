"""The observation-in-a-VM part of BENCHMARKS.md's generated section: reads the console output of the
VM that tests/bench/run.sh boots for scenario 42 (tests/vm/scenarios/42-observe-bench.sh) and writes
its figures. That VM's kernel allows fexit, which this host's kernel refuses, so this is where the
daemon's cost on a kernel that does not need syscall tracepoints is measured. Only ratios measured
in that one VM run are reported: software emulation distorts absolute times."""

import statistics

from enforce_report import console, fmt_ns

OVERHEAD_TARGET = 0.03
# The runs without the daemon are the yardstick: when they differ by more than this between pairs,
# the emulated machine's speed moved (a busy host) more than any overhead could, and no verdict is given.
BASELINE_SPREAD_MAX = 0.20

LOOPS = {
    "open": "openat+close (4 files, round-robin)",
    "forkexec": "fork + execve /bin/true + wait",
    "connect": "TCP connect to loopback + close",
}


def parse(path):
    """Pairs per loop [(without ns, without cpu, with ns, with cpu)], setup, hooks, kernel, passed,
    and from the stats run: ns per operation per loop, [(loop, program, runs, run time ns)]."""
    pairs, setup, hooks = {}, {}, ""
    op_ns, bpf = {}, []
    kernel, passed, lines = console(path, "42-observe-bench")
    for words, text in lines:
        if words[0] == "obs-bench-pair:" and len(words) == 7:
            pairs.setdefault(words[1], []).append(tuple(float(x) for x in words[3:7]))
        elif words[0] == "obs-bench-setup:":
            setup = dict(kv.split("=", 1) for kv in words[1:] if "=" in kv)
        elif words[0] == "obs-bench-hooks:":
            hooks = text.split(":", 1)[1].strip()
        elif words[0] == "obs-bench-op:" and len(words) == 3:
            op_ns[words[1]] = float(words[2])
        elif words[0] == "obs-bench-bpf:" and len(words) == 5:
            bpf.append((words[1], words[2], int(words[3]), int(words[4])))
    return pairs, setup, hooks, kernel, passed, op_ns, bpf


def section(w, summary, path):
    w(f"### Observation overhead in a VM with fexit (target: ≤ {OVERHEAD_TARGET:.0%} slowdown)")
    w("")
    try:
        pairs, setup, hooks, kernel, passed, op_ns, bpf = parse(path)
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
    w(f"Scenario `42-observe-bench` alone in one VM ({kernel or 'kernel unknown'}, QEMU software emulation, "
      f"one vCPU), whose kernel lets the daemon hook opens and network calls with fexit instead of syscall "
      f"tracepoints (hooks in use: {hooks or 'not reported'}). The loops of the overhead table above, always under "
      f"`stance launch`, without and with the daemon running (started and stopped for each pair), "
      f"{setup.get('pairs', '?')} pairs in alternating order. Per pair, slowdown = with/without − 1, of wall "
      "time and of the workload's CPU time (which leaves out the time it waits while the daemon runs on the "
      "VM's one CPU); the figures are medians over the pairs. Times per operation are emulated time and only "
      "comparable within this table."
      + ("" if passed else " **The scenario did not pass**: see the run's output."))
    w("")
    w("| loop | ops per run | without, per op (median) | with, per op (median) | slowdown (wall) "
      "| slowdown (CPU) | target (CPU) | slowdown per pair (wall) |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for loop, label in LOOPS.items():
        got = pairs.get(loop, [])
        if not got:
            w(f"| {label} | | | | not measured | | | |")
            continue
        wall = [b / a - 1 for a, _, b, _ in got]
        cpu = [bc / ac - 1 for _, ac, _, bc in got]
        slow_wall, slow_cpu = statistics.median(wall), statistics.median(cpu)
        ok = slow_cpu <= OVERHEAD_TARGET
        base = [ac for _, ac, _, _ in got]
        spread = max(base) / min(base) - 1
        verdict = "met" if ok else "missed"
        if spread > BASELINE_SPREAD_MAX:
            verdict = f"inconclusive (runs without the daemon differ by {spread:.0%})"
        n = int(setup.get(loop, 0) or 0)
        w(f"| {label} | {n:,} | {fmt_ns(statistics.median(a for a, _, _, _ in got))} "
          f"| {fmt_ns(statistics.median(b for _, _, b, _ in got))} | {slow_wall * 100:+.1f}% "
          f"| {slow_cpu * 100:+.1f}% | **{verdict}** "
          f"| {', '.join(f'{p * 100:+.1f}%' for p in wall)} |")
        summary.append(f"observation in a VM (fexit), {loop}: {slow_cpu * 100:+.1f}% CPU, {slow_wall * 100:+.1f}% "
                       f"wall, median over {len(got)} pairs (target ≤ {OVERHEAD_TARGET:.0%}: "
                       f"{verdict})")
    w("")
    if bpf and op_ns:
        w("Where the time goes: one more run of each loop with the daemon and `kernel.bpf_stats_enabled = 1`: per "
          "program of the daemon that ran, its runs during that loop (every task of the VM), its mean run time, "
          "and its run time per operation of the loop as a share of the operation's time (both emulated, "
          "measured in the same run).")
        w("")
        w("| loop | program | runs | mean run time | per operation | share of an operation |")
        w("| --- | --- | ---: | ---: | ---: | ---: |")
        for loop, prog, runs, ns in bpf:
            n = int(setup.get(loop, 0) or 0)
            per_op = ns / n if n else 0
            share = per_op / op_ns[loop] if op_ns.get(loop) else 0
            w(f"| {loop} | `{prog}` | {runs:,} | {fmt_ns(ns / runs) if runs else '-'} | {fmt_ns(per_op)} "
              f"| {share * 100:.1f}% |")
        w("")
