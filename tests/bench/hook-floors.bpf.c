// SPDX-License-Identifier: GPL-2.0
/* One empty program on one candidate hook for observing opens, chosen at compile time with
 * -DHOOK=N (tests/bench/hook-floors.sh builds one object per hook). What a workload loses with it
 * attached is that hook's own price, before any program does work: the floor any observer of opens
 * built on it pays. */
#include "floor.bpf.h"

#if HOOK == 1
EMPTY("fentry/do_filp_open", floor_fentry_filp_open)
#elif HOOK == 2
EMPTY("fentry/fd_install", floor_fentry_fd_install)
#elif HOOK == 3
EMPTY("lsm/file_open", floor_lsm_file_open)
#elif HOOK == 4
EMPTY("fexit/vfs_open", floor_fexit_vfs_open)
#elif HOOK == 5
EMPTY("fexit/do_filp_open", floor_fexit_filp_open)
#elif HOOK == 6
EMPTY("tp_btf/sys_exit", floor_raw_sys_exit)
#elif HOOK == 7
EMPTY("tracepoint/syscalls/sys_exit_openat", floor_tp_sys_exit_openat)
#else
#error "HOOK must be 1 to 7"
#endif

char LICENSE[] SEC("license") = "GPL";
