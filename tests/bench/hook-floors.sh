#!/bin/bash
# The floor of every hook a BPF program can observe an open from (BENCHMARKS.md, "Which hook could do
# better"): builds one object per hook (hook-floors.bpf.c) and runs tests/bench/vm/50-hook-floors.sh
# in a 6.12 VM on QEMU's instruction clock. Needs `make build` first (for stance-vmtest). Root.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/tests/bench
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
TMP=$(mktemp -d /tmp/stance-hook-floors.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
names=(fentry-do_filp_open fentry-fd_install lsm-file_open fexit-vfs_open fexit-do_filp_open tp_btf-sys_exit tracepoint-sys_exit_openat)
files=()
for i in "${!names[@]}"; do
    obj=$TMP/hook-$((i + 1))-${names[$i]}.bpf.o
    clang-19 -O2 -g -target bpf -I/usr/include/$(gcc -dumpmachine) -DHOOK=$((i + 1)) -c "$HERE/hook-floors.bpf.c" -o "$obj"
    files+=(--file "$obj:/opt/stance-bench/$(basename "$obj")")
done
mkdir -p "$TMP/bin"
gcc -O2 -Wall -Wextra -Werror -pthread -o "$TMP/bin/loadgen" "$HERE/loadgen.c"
gcc -O2 -Wall -Wextra -Werror -o "$TMP/bin/bench-floor" "$HERE/floor.c" -lbpf
"$BIN/stance-vmtest" --kernel "${BENCH_VM_KERNEL:-6.12}" --icount --scenarios "$HERE/vm" \
    --bin "$TMP/bin/loadgen" --bin "$TMP/bin/bench-floor" "${files[@]}" --lib-from-ldd --scenario-timeout 1200 |
    grep -E 'hook-floor:|FAIL|passed'
