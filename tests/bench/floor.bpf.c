// SPDX-License-Identifier: GPL-2.0
/* The floor of the observe hooks on this kernel: empty programs on exactly the tracepoints the
 * daemon's observe programs use. Whatever a workload loses with these attached is the price of the
 * hooks themselves (syscall-tracepoint dispatch puts every syscall of every task on the slow path
 * once any syscall tracepoint is attached), which no program body can win back. `make bench`
 * measures it next to the daemon so the two can be compared in one run. Keep the list in step with
 * FAMILIES in discovery/src/probes/mod.rs (file opens, file name changes, network, exec, process
 * lifecycle). */
#include "floor.bpf.h"

EMPTY("tracepoint/syscalls/sys_exit_open", floor_open)
EMPTY("tracepoint/syscalls/sys_exit_openat", floor_openat)
EMPTY("tracepoint/syscalls/sys_exit_openat2", floor_openat2)
EMPTY("tracepoint/syscalls/sys_exit_creat", floor_creat)
EMPTY("tracepoint/syscalls/sys_exit_open_by_handle_at", floor_open_by_handle_at)
EMPTY("tracepoint/syscalls/sys_exit_unlink", floor_unlink)
EMPTY("tracepoint/syscalls/sys_exit_unlinkat", floor_unlinkat)
EMPTY("tracepoint/syscalls/sys_exit_rename", floor_rename)
EMPTY("tracepoint/syscalls/sys_exit_renameat", floor_renameat)
EMPTY("tracepoint/syscalls/sys_exit_renameat2", floor_renameat2)
EMPTY("tracepoint/syscalls/sys_exit_link", floor_link)
EMPTY("tracepoint/syscalls/sys_exit_linkat", floor_linkat)
EMPTY("tracepoint/syscalls/sys_exit_truncate", floor_truncate)
EMPTY("tracepoint/syscalls/sys_exit_mknod", floor_mknod)
EMPTY("tracepoint/syscalls/sys_exit_mknodat", floor_mknodat)
EMPTY("tracepoint/syscalls/sys_exit_connect", floor_connect)
EMPTY("tracepoint/syscalls/sys_exit_sendto", floor_sendto)
EMPTY("tracepoint/syscalls/sys_exit_sendmsg", floor_sendmsg)
EMPTY("tracepoint/syscalls/sys_exit_sendmmsg", floor_sendmmsg)
EMPTY("raw_tracepoint/sched_process_exec", floor_exec)
EMPTY("raw_tracepoint/sched_process_fork", floor_fork)
EMPTY("raw_tracepoint/sched_process_exit", floor_exit)

char LICENSE[] SEC("license") = "GPL";
