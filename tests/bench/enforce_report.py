"""The enforcement part of BENCHMARKS.md's generated section: reads the console output of the VM that
tests/bench/run.sh boots for scenario 39 (tests/vm/scenarios/39-enforce-bench.sh) and writes its
figures. Only ratios measured in that one VM run are reported as results. On QEMU's instruction
clock (`stance-vmtest --icount`, as run.sh boots it) a guest ns is one executed instruction, so the
figures are instruction counts, the same in every run; on the host's clock they are emulated times,
distorted by emulation and by whatever else the host runs."""

import re
import statistics

ENFORCE_TARGET = 0.05

# What stance-vmtest prints when the guest runs on QEMU's instruction clock (`--icount`).
ICOUNT_LINE = "==> guest clock: instructions"

LOOPS = {
    "open": "openat+close of one file (decision cache hit after the first)",
    "open-uncached": "openat+close of a file with two links (never cached: path walk, hash, rule lookups each time)",
    "exec": "fork + execve of an allowed binary + wait",
}

# Console lines arrive as "[6.12] text"; the harness's own lines start with "==>".
CONSOLE = re.compile(r"^\[(?P<kernel>[0-9.]+)\] (?P<text>.*)$")
KERNEL_LINE = re.compile(r"^==> \[(?P<series>[0-9.]+)\] (?P<package>\S+) (?P<version>\S+)")


def console(path, scenario):
    """Reads the harness output of a VM run: (the kernel package and version, whether `scenario`
    passed, the words of each console line of the guest, as (words, line text), whether the guest
    clock counted instructions)."""
    kernel, passed, lines, icount = None, False, [], False
    with open(path, errors="replace") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if line.startswith(ICOUNT_LINE):
                icount = True
                continue
            m = KERNEL_LINE.match(line)
            if m:
                kernel = f"{m['package']} {m['version']}"
                continue
            if re.search(rf"\] PASS {re.escape(scenario)}\b", line):
                passed = True
            m = CONSOLE.match(line)
            if m and m["text"].split():
                lines.append((m["text"].split(), m["text"]))
    return kernel, passed, lines, icount


def parse(path):
    """Pairs per loop [(enforced ns, observe ns)], BPF stats, setup and kernel from the VM output."""
    pairs, bpf, setup, timing = {}, [], {}, {}
    kernel, passed, lines, icount = console(path, "39-enforce-bench")
    for text, _ in lines:
        if text[0] == "bench-pair:" and len(text) == 5:
            pairs.setdefault(text[1], []).append((float(text[3]), float(text[4])))
        elif text[0] == "bench-bpf:" and len(text) == 6:
            bpf.append((text[1], text[2], text[3], int(text[4]), int(text[5])))
        elif text[0] == "bench-setup:":
            setup = dict(kv.split("=", 1) for kv in text[1:] if "=" in kv)
        elif text[0] == "timing:" and len(text) >= 3:
            timing[text[1]] = " ".join(text[2:])
    return pairs, bpf, setup, timing, kernel, passed, icount


def fmt_ns(ns):
    if abs(ns) >= 1e7:
        return f"{ns / 1e6:,.1f} ms"
    return f"{ns / 1e3:,.1f} µs" if abs(ns) >= 1e4 else f"{ns:,.0f} ns"


def section(w, summary, path):
    w(f"### Enforcement, in a VM (target: ≤ {ENFORCE_TARGET:.0%} slowdown)")
    w("")
    try:
        pairs, bpf, setup, timing, kernel, passed, icount = parse(path)
    except OSError as e:
        w(f"Not measured: cannot read the VM's output ({e}).")
        w("")
        summary.append("enforcement: not measured")
        return
    if not pairs:
        w("Not measured: the VM printed no `bench-pair:` lines.")
        w("")
        summary.append("enforcement: not measured")
        return
    # Under icount a guest ns is one instruction: the figures are counts, not times.
    per_op = (lambda ns: f"{ns:,.0f}") if icount else fmt_ns
    unit = "guest instructions" if icount else "emulated time"
    ops = {"open": setup.get("opens"), "open-uncached": setup.get("opens"), "exec": setup.get("execs")}
    clock = ("on QEMU's instruction clock (`-icount shift=0,sleep=off`: 1 ns of guest time = 1 executed "
             "instruction, the same in every run to a fraction of a percent)" if icount else "on the host's clock")
    w(f"Scenario `39-enforce-bench` alone in one VM ({kernel or 'kernel unknown'}, QEMU software emulation, "
      f"one vCPU, {clock}): a workload whose file and process domains are enforced with {int(setup.get('file_rules', 0)):,} "
      "file rules, against the same loop in a workload in observe mode (the enforcer's programs attached, no "
      f"policy), {setup.get('pairs', '?')} pairs per loop, the two batches of a pair in alternating order. Per "
      "pair, slowdown = enforced/observe − 1; the figure is the median over the pairs. Figures per operation are "
      f"{unit} and only comparable within this table."
      + ("" if passed else " **The scenario did not pass**: see the run's output."))
    w("")
    w("| loop | ops per batch | enforced, per op (median) | observe, per op (median) | slowdown | target "
      "| fastest enforced / fastest observe | slowdown per pair |")
    w("| --- | ---: | ---: | ---: | ---: | --- | ---: | --- |")
    for loop, label in LOOPS.items():
        got = pairs.get(loop, [])
        if not got:
            w(f"| {label} | | | | not measured | | | |")
            continue
        per_pair = [e / o - 1 for e, o in got]
        slow = statistics.median(per_pair)
        fastest = min(e for e, _ in got) / min(o for _, o in got) - 1
        ok = slow <= ENFORCE_TARGET
        n = int(ops[loop]) if ops[loop] else 0
        w(f"| {label} | {n:,} | {per_op(statistics.median(e for e, _ in got))} "
          f"| {per_op(statistics.median(o for _, o in got))} | {slow * 100:+.1f}% "
          f"| {'**met**' if ok else '**missed**'} | {fastest * 100:+.1f}% "
          f"| {', '.join(f'{p * 100:+.1f}%' for p in per_pair)} |")
        summary.append(f"enforcement {loop}: {slow * 100:+.1f}% median over {len(got)} pairs "
                       f"(target ≤ {ENFORCE_TARGET:.0%}: {'met' if ok else 'missed'})")
    w("")
    if timing:
        w("Driver start-up (load, canary, attach) took " + timing.get("start", "?")
          + ", applying the policy " + timing.get("apply", "?") + f" ({unit} as ns).")
        w("")
    if bpf:
        w("Where the time goes: afterwards, one more batch of each loop in each workload with "
          "`kernel.bpf_stats_enabled = 1`, between two `bpftool prog show` snapshots: per program, its runs in "
          "that time (every task of the VM, bpftool included) and the kernel's run time per run ("
          + ("guest instructions, the stats' own clock reads included" if icount else "emulated") + "). "
          "Only programs that ran are listed.")
        w("")
        w("| loop | program | enforced: runs | enforced: mean run time | observe: runs | observe: mean run time |")
        w("| --- | --- | ---: | ---: | ---: | ---: |")
        by = {(loop, side, prog): (runs, ns) for loop, side, prog, runs, ns in bpf}
        for loop in LOOPS:
            for prog in sorted({p for l, _, p, _, _ in bpf if l == loop}):
                cells = []
                for side in ("enforced", "observe"):
                    runs, ns = by.get((loop, side, prog), (0, 0))
                    cells += [f"{runs:,}", per_op(ns / runs) if runs else "-"]
                w(f"| {loop} | `{prog}` | " + " | ".join(cells) + " |")
        w("")
