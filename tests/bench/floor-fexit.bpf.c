// SPDX-License-Identifier: GPL-2.0
/* The floor of the observe hooks on a kernel that takes fexit (the 6.12 VM of scenario 42): empty
 * programs on exactly the functions and BTF tracepoints the daemon's observe programs attach to
 * there. A workload's slowdown with these attached is the price of the hooks themselves (for an
 * fexit, the trampoline that saves the arguments and calls the program), which no program body can
 * win back; scenario 42 measures it next to the daemon's. Keep the list in step with the first hook
 * of each family in FAMILIES (discovery/src/probes/mod.rs) that the kernel takes: the daemon's
 * start-up report names them, and scenario 42 prints them as `obs-bench-hooks:`.
 *
 * No vmlinux.h: an fexit program that never reads its context needs no types, and libbpf finds each
 * target function in the running kernel's BTF by the section name. */
#include "floor.bpf.h"

/* file opens: the kernel's open path, and open_by_handle_at, which does not pass through it */
EMPTY("fexit/do_filp_open", floor_filp_open)
EMPTY("fexit/__x64_sys_open_by_handle_at", floor_open_by_handle_at)
/* file name changes: the kernel's security_path_* hooks */
EMPTY("fexit/security_path_unlink", floor_path_unlink)
EMPTY("fexit/security_path_rename", floor_path_rename)
EMPTY("fexit/security_path_link", floor_path_link)
EMPTY("fexit/security_path_truncate", floor_path_truncate)
EMPTY("fexit/security_path_mknod", floor_path_mknod)
/* network: the kernel's connect path (connect(2) and io_uring's CONNECT), datagram sends in the
 * functions the 64-bit and 32-bit syscalls share and io_uring's where it issues them, unix
 * datagrams where their peer is found */
EMPTY("fexit/__sys_connect_file", floor_connect)
EMPTY("fexit/__sys_sendto", floor_sendto)
EMPTY("fexit/__sys_sendmsg", floor_sendmsg)
EMPTY("fexit/__sys_sendmmsg", floor_sendmmsg)
EMPTY("fexit/io_sendmsg", floor_io_sendmsg)
EMPTY("fexit/io_send", floor_io_send)
EMPTY("fexit/security_unix_may_send", floor_unix_may_send)
/* ptrace and /proc/PID access */
EMPTY("fexit/security_ptrace_access_check", floor_ptrace)
/* exec, process lifecycle */
EMPTY("tp_btf/sched_process_exec", floor_exec)
EMPTY("tp_btf/sched_process_fork", floor_fork)
EMPTY("tp_btf/sched_process_exit", floor_exit)
/* capabilities */
EMPTY("fexit/cap_capable", floor_cap_capable)
/* cgroups */
EMPTY("tp_btf/cgroup_mkdir", floor_cgroup_mkdir)
EMPTY("tp_btf/cgroup_rmdir", floor_cgroup_rmdir)

char LICENSE[] SEC("license") = "GPL";
