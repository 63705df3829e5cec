/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The one definition of everything that crosses from Stance's BPF programs to userspace:
 * event kinds, flag bits, loss reasons and record layouts. The Rust side is generated from this
 * file with bindgen (discovery/build.rs), so the two cannot drift.
 *
 * A record in the ring buffer is: struct stance_event_header, then the kind's fixed body
 * (struct stance_*_body, STANCE_BODY_SIZE bytes reserved for every kind), then the strings whose
 * lengths are in header.len[], one after another in index order, without terminators.
 */
#ifndef STANCE_EVENTS_H
#define STANCE_EVENTS_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define STANCE_COMM_LEN 16
/* Longest path the kernel side resolves; longer ones are flagged STANCE_F_PATH_TRUNC. */
#define STANCE_PATH_MAX 4096
/* Upper bound on argv bytes kept per exec (the daemon may ask for fewer). */
#define STANCE_ARGV_MAX 1024
/* Longest unix socket path (sizeof(sockaddr_un.sun_path)). */
#define STANCE_UNIX_PATH_MAX 108
/* Bytes reserved for the per-kind body in every record. */
#define STANCE_BODY_SIZE 32
/* Room for the strings of one record: exe path, object path, a second path, argv. */
#define STANCE_DATA_MAX (3 * STANCE_PATH_MAX + STANCE_ARGV_MAX)
#define STANCE_NSTR 4
/* Keys the per-CPU dedup LRU holds (map dedup), and slots of the per-CPU cache in front of it
 * (map dedup_cache). Userspace sizes its map from dedup key to edge from these. */
#define STANCE_DEDUP_ENTRIES 16384
#define STANCE_DEDUP_SLOTS 256

enum stance_event_kind {
	STANCE_EV_EXEC = 1,
	STANCE_EV_FORK = 2,
	STANCE_EV_EXIT = 3,
	STANCE_EV_OPEN = 4,
	STANCE_EV_CONNECT = 5,
	/* A datagram sent with an explicit destination (sendto/sendmsg/sendmmsg), no connect. */
	STANCE_EV_SEND = 6,
	STANCE_EV_CAPABLE = 7,
	STANCE_EV_CGROUP_MKDIR = 8,
	STANCE_EV_CGROUP_RMDIR = 9,
	/* A ptrace access check on another process: ptrace(2) itself, and reads of its /proc/PID
	 * files (environ, fd, maps, ...), process_vm_readv, pidfd_getfd, kcmp. */
	STANCE_EV_PTRACE = 10,
};

/* Indices into header.len[]: which string is which. */
enum stance_str {
	/* The acting process's executable (empty for exec, where STANCE_STR_OBJECT is the new binary). */
	STANCE_STR_EXE = 0,
	/* The object: file path, new binary path, unix socket path, cgroup path. */
	STANCE_STR_OBJECT = 1,
	/* Base directory for an object that is the caller's relative string (STANCE_F_UNRESOLVED),
	 * or the parent's executable for exec. */
	STANCE_STR_AUX = 2,
	/* argv for exec, NUL-separated. */
	STANCE_STR_ARGV = 3,
};

enum stance_event_flag {
	/* The acting executable's path was longer than STANCE_PATH_MAX or deeper than the walk. */
	STANCE_F_EXE_TRUNC = 1 << 0,
	/* The object's path was cut. */
	STANCE_F_PATH_TRUNC = 1 << 1,
	STANCE_F_ARGV_TRUNC = 1 << 2,
	/* exec: the parent process is in another cgroup (e.g. `stance launch` itself). */
	STANCE_F_PARENT_OUTSIDE = 1 << 3,
	/* The object has no path in any mount (memfd, anonymous file): its name is its label. */
	STANCE_F_ANON = 1 << 4,
	/* The object string is the caller's (failed open, unix connect); if relative, AUX is the
	 * directory it is relative to, resolved in the kernel at the time of the call. */
	STANCE_F_UNRESOLVED = 1 << 5,
	/* The syscall arguments could not be read: access intent comes from the file's f_mode. */
	STANCE_F_ARGS_UNKNOWN = 1 << 6,
	/* The parent's executable path was cut. */
	STANCE_F_AUX_TRUNC = 1 << 7,
	/* unix socket in the abstract namespace. */
	STANCE_F_ABSTRACT = 1 << 8,
	/* Capability checked against a user namespace other than the initial one. */
	STANCE_F_CHILD_USERNS = 1 << 9,
};

/* Events the kernel side could not deliver, counted per cgroup (map cgroup_losses). Truncations
 * are not here: those events are delivered with a flag, and userspace counts them. */
enum stance_loss_reason {
	/* bpf_ringbuf_output failed: the reader is behind. */
	STANCE_LOSS_RINGBUF = 0,
	/* A kernel object could not be read. */
	STANCE_LOSS_READ = 1,
	STANCE_LOSS_NR = 2,
};

/* Access intent of an open. */
enum stance_access {
	STANCE_ACC_READ = 1 << 0,
	STANCE_ACC_WRITE = 1 << 1,
	STANCE_ACC_CREATE = 1 << 2,
	STANCE_ACC_TRUNC = 1 << 3,
};

/*
 * What an open record stands for: an open, or a change to a name. Enforcement decides unlink,
 * rename, link, truncate by path and mknod as writes to every name they remove, replace or create,
 * so observation records each such name as an open with write access and its operation.
 */
enum stance_name_op {
	STANCE_OP_OPEN = 0,
	/* unlink(2), unlinkat(2) without AT_REMOVEDIR */
	STANCE_OP_UNLINK = 1,
	/* rename(2) and its variants: the old name, and the new one (replaced if it existed) */
	STANCE_OP_RENAME_FROM = 2,
	STANCE_OP_RENAME_TO = 3,
	/* link(2), linkat(2): the existing name, and the new one */
	STANCE_OP_LINK_FROM = 4,
	STANCE_OP_LINK_TO = 5,
	/* truncate(2) by path (access write|truncate) */
	STANCE_OP_TRUNCATE = 6,
	/* mknod(2) of a FIFO or regular file (access write|create) */
	STANCE_OP_MKNOD = 7,
	STANCE_OP_NR = 8,
};

/*
 * Key of the kernel's per-CPU dedup cache and LRU: what makes two events repeats of one another.
 * Every record that passed a dedup check carries its key (header.dedup), so userspace can tell
 * which edge a count the kernel still holds belongs to when the daemon stops.
 */
struct stance_dedup_key {
	__u64 cgroup_id;
	/* The object, in a form only the kernel side needs to understand (inode and superblock,
	 * address words, a hash of a name): userspace compares keys, it never interprets them. */
	__u64 obj_a;
	__u64 obj_b;
	__u64 exe_ino;
	__u32 exe_dev;
	/* kind << 16 | name op << 8 | access bits (opens), kind << 16 | bits (capabilities), kind << 24 | socket type << 16 | errno
	 * (network). Never 0 in a real key, so 0 marks a record that passed no dedup check. */
	__u32 kind_bits;
};

/* Value of the dedup LRU: when the key was last emitted, in jiffies, and how many repeats were
 * suppressed since. */
struct stance_dedup_val {
	__u64 last_emit;
	__u32 suppressed;
	__u32 _pad;
};

/* One slot of the per-CPU direct-mapped cache in front of the LRU (map dedup_cache). While a key
 * sits in a slot, the slot holds its state on that CPU and the LRU's value for it on that CPU is
 * stale. A slot whose key.kind_bits is 0 holds no key. */
struct stance_dedup_slot {
	struct stance_dedup_key key;
	__u64 last_emit;
	__u32 suppressed;
	__u32 _pad;
};

struct stance_event_header {
	/* CLOCK_BOOTTIME, ns. */
	__u64 ts_ns;
	/* cgroup v2 id (inode of the cgroup directory) of the acting task. */
	__u64 cgroup_id;
	/* Inode and device of the acting executable: the dedup key's actor and a stable identity. */
	__u64 exe_ino;
	__u32 exe_dev;
	__u32 kind;
	__u32 flags;
	__u32 pid;
	__u32 tgid;
	/* Thread-group id of the real parent. */
	__u32 ppid;
	__u32 uid;
	/* 0 or -errno (open, connect, send: the syscall's result; exit: the exit code). */
	__s32 ret;
	/* How many identical events the kernel suppressed on this CPU since the last one it emitted. */
	__u32 repeat;
	__u16 len[STANCE_NSTR];
	char comm[STANCE_COMM_LEN];
	__u32 _pad;
	/* The dedup key this record passed (open, connect, send, capable); all zero for kinds that
	 * are never suppressed. */
	struct stance_dedup_key dedup;
};

struct stance_exec_body {
	__u64 ino;
	__u64 parent_exe_ino;
	__u32 dev;
	__u32 parent_exe_dev;
	__u32 argc;
	__u32 _pad;
};

#define STANCE_SYSCALL_UNKNOWN 0xffffffffU

struct stance_open_body {
	__u64 ino;
	__u32 dev;
	/* Flags as passed to the syscall (O_*), unless STANCE_F_ARGS_UNKNOWN; from do_filp_open, as
	 * the kernel built them from those (with O_LARGEFILE, and only O_PATH's companions kept). */
	__u32 open_flags;
	/* The opened file's f_mode (FMODE_READ 1, FMODE_WRITE 2) for successful opens. */
	__u32 fmode;
	/* STANCE_ACC_* */
	__u32 access;
	/* Which syscall: __NR_open, __NR_openat, __NR_renameat2, ...; STANCE_SYSCALL_UNKNOWN when
	 * observed in a kernel function that every such syscall and io_uring reach (do_filp_open, the
	 * security_path_* hooks). */
	__u32 syscall_nr;
	/* enum stance_name_op: STANCE_OP_OPEN for an open. */
	__u32 op;
};

struct stance_net_body {
	/* Destination address, network byte order; IPv4 in the first 4 bytes. */
	__u8 addr[16];
	/* AF_INET, AF_INET6 or AF_UNIX as given by the caller (IPv4-mapped IPv6 stays AF_INET6 here). */
	__u16 family;
	/* Destination port, host byte order. */
	__u16 port;
	/* SOCK_STREAM, SOCK_DGRAM, SOCK_RAW, ... */
	__u16 sock_type;
	/* IPPROTO_TCP, IPPROTO_UDP, ... as the socket was created. */
	__u16 protocol;
	__u32 _pad[2];
};

struct stance_cap_body {
	__u64 userns_inum;
	__u32 cap;
	__u32 opts;
	/* 1 when granted by the LSMs that ran before this one. */
	__u32 granted;
	__u32 _pad[3];
};

struct stance_proc_body {
	/* fork: the new process. */
	__u32 child_pid;
	__u32 child_tgid;
	/* exit: the exit code as wait(2) reports it. */
	__s32 exit_code;
	__u32 _pad[5];
};

struct stance_ptrace_body {
	/* cgroup v2 id of the target process. */
	__u64 target_cgroup_id;
	__u32 target_tgid;
	/* PTRACE_MODE_* as the kernel asked: READ 1, ATTACH 2, FSCREDS 4, REALCREDS 8, NOAUDIT 16. */
	__u32 mode;
	__u32 _pad[4];
};

struct stance_cgroup_body {
	__u64 id;
	__s32 hierarchy_id;
	__s32 level;
	__u32 _pad[4];
};

/* Value of map cgroup_losses: per-cgroup loss counters, indexed by enum stance_loss_reason. */
struct stance_losses {
	__u64 count[STANCE_LOSS_NR];
};

#endif /* STANCE_EVENTS_H */
