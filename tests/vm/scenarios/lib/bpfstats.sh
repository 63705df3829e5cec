# snap: every BPF program's id, name, run count and run time, one line each (`ID: NAME RUNS NS`),
# sorted, from `bpftool prog show` with kernel.bpf_stats_enabled on, whose lines read
# "ID: TYPE  name NAME  tag ...  run_time_ns NS run_cnt N". Sourced by the bench scenarios (39, 42).
snap() {
    bpftool prog show | awk '/ name / {
        name = ""; ns = 0; cnt = 0
        for (i = 1; i < NF; i++) {
            if ($i == "name") name = $(i + 1)
            if ($i == "run_time_ns") ns = $(i + 1)
            if ($i == "run_cnt") cnt = $(i + 1)
        }
        print $1, name, cnt, ns
    }' | sort
}
