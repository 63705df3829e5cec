/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The one definition of Stance's enforcement maps and deny/would-deny records, shared by
 * probes-ebpf/src/enforce.bpf.c and (through bindgen) discovery/src/enforce.
 *
 * Model: every cgroup of a workload in audit or enforce has an entry in `cgroup_policy` naming the
 * workload's policy id, the live revision of its rules, and a mode per domain. Rules are keyed by
 * (policy id, revision, ...). An update writes the complete new revision's rules first (its
 * `policy_info` entry last, which marks the revision complete), then swaps each cgroup's entry to the
 * new revision in one map update, waits until no program can still be running with the old revision
 * (an RCU grace period), then deletes the old revision: a process sees the old or the new rules,
 * never a mix or nothing. A cgroup without an entry is never touched (observe).
 *
 * Revisions are unique per pinned map set (a counter in `enforce_meta`), never reused, so cached
 * decisions of an old revision can never be mistaken for the new one's.
 *
 * Maps are pinned under /sys/fs/bpf/stance/enforce-v<STANCE_ENFORCE_ABI_VERSION>/maps; bump the
 * version whenever a key, value or map definition below changes, so a newer daemon never reads
 * maps written with another layout.
 */
#ifndef STANCE_ENFORCE_H
#define STANCE_ENFORCE_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define STANCE_ENFORCE_ABI_VERSION 2

/* Map capacities (max_entries). An update needs room for the old and the new revision at once. */
#define STANCE_MAX_CGROUPS 4096
#define STANCE_MAX_POLICY_REVS 2048
#define STANCE_MAX_FILE_RULES 65536
#define STANCE_MAX_EXEC_RULES 8192
#define STANCE_MAX_NET_RULES 8192
#define STANCE_MAX_UNIX_RULES 4096
#define STANCE_DECISION_CACHE_ENTRIES 65536
#define STANCE_VERDICT_SEEN_ENTRIES 16384
#define STANCE_VERDICT_RINGBUF_BYTES (4 << 20)

enum stance_domain {
	STANCE_DOM_PROCESS = 0,
	STANCE_DOM_FILE = 1,
	STANCE_DOM_NETWORK = 2,
	STANCE_DOM_CAPS = 3,
	STANCE_NDOMAINS = 4,
};

enum stance_mode {
	STANCE_MODE_OBSERVE = 0,
	/* Evaluate and report would-deny; never block. */
	STANCE_MODE_AUDIT = 1,
	/* Return -EPERM and report deny. */
	STANCE_MODE_ENFORCE = 2,
};

/* Value of `cgroup_policy` (key: cgroup id). */
struct stance_cgroup_policy {
	__u32 policy_id;
	__u32 rev;
	__u8 mode[STANCE_NDOMAINS];
	/* STANCE_CG_* */
	__u32 flags;
};

/* The entry was copied by the kernel from the parent cgroup's when the cgroup was created inside an
 * audited or enforced workload (a cgroup a workload makes for itself stays in its policy); it is
 * removed with the cgroup. Updates swap these to the new revision too. */
#define STANCE_CG_INHERITED (1 << 0)

/* Key of `policy_info` (and the prefix of every rule key). */
struct stance_policy_key {
	__u32 policy_id;
	__u32 rev;
};

/* Value of `policy_info`: per-revision facts that are not per-object rules. Written after every rule
 * of the revision: its presence means the revision is complete. */
struct stance_policy_info {
	/* Bit n set: capability n is allowed. */
	__u64 caps_allowed;
	/* STANCE_PTRACE_*: what processes of this workload may trace. */
	__u32 ptrace;
	/* The modes this revision was applied with (read back by a daemon that adopts pinned maps;
	 * the programs use the copy in `cgroup_policy`). */
	__u8 mode[STANCE_NDOMAINS];
};

#define STANCE_PTRACE_NONE 0
/* May trace processes of the same workload only. */
#define STANCE_PTRACE_SAME_WORKLOAD 1

/* Paths and other strings are matched by a 128-bit keyed hash: SipHash-2-4 in two independent
 * lanes (lo with key k0,k1; hi with key k2,k3), the keys drawn from getrandom when the maps are first
 * created and kept in `enforce_meta`, so a crafted path cannot be made to collide with an allowed
 * one. Rust computes the same function (discovery/src/enforce/hash.rs). */
struct stance_hash128 {
	__u64 lo;
	__u64 hi;
};

enum stance_file_rule_kind {
	/* The exact path. */
	STANCE_FILE_EXACT = 0,
	/* The directory itself and every path under it (hashed without a trailing slash; "/" is
	 * hashed as the empty string). */
	STANCE_FILE_PREFIX = 1,
	/* The direct children of the directory (one level: not the directory itself, not deeper),
	 * hashed like a prefix rule. Looked up with the opened path's parent only. */
	STANCE_FILE_CHILDREN = 2,
};

/*
 * Paths on procfs are matched with every all-digit component of 1 to 10 characters (a pid, a tid,
 * an irq number) written as "*", so one rule covers every process: /proc/<pid>/stat is looked up
 * with "*" in place of the pid. Deny reports of such paths show them in this form too.
 */
#define STANCE_PROC_SUPER_MAGIC 0x9fa0

/* Key of `file_rules`. */
struct stance_file_key {
	__u32 policy_id;
	__u32 rev;
	__u32 kind;
	__u32 _pad;
	struct stance_hash128 path;
};

/* Value of `file_rules`: STANCE_ACC_READ and/or STANCE_ACC_WRITE from stance_events.h (O_CREAT
 * and O_TRUNC opens need write). The rules matching a path (exact, and every prefix) add up. */
struct stance_file_rule {
	__u32 access;
	__u32 _pad;
};

/* Key of `exec_rules`: an allowed executable, by path hash, with `source` zero. Anonymous
 * executables (memfd) are hashed by their label, e.g. "memfd:NAME" (no leading slash, so never
 * equal to a real path). An executable whose rule has STANCE_EXEC_FROM_ONLY has one more entry per
 * executable allowed to start it (fromSource): `source` is the hash of that executable's path (or
 * label), the one the process calling execve runs before the new image replaces it. */
struct stance_exec_key {
	__u32 policy_id;
	__u32 rev;
	struct stance_hash128 path;
	struct stance_hash128 source;
};

/* Value of `exec_rules` (for a `source` entry only its presence counts). When ino is non-zero the
 * binary must also be that device (the kernel's encoding: major << 20 | minor) and inode. */
struct stance_exec_rule {
	__u64 ino;
	__u64 dev;
	/* STANCE_EXEC_* */
	__u32 flags;
	__u32 _pad;
};

/* Only the executables listed as its sources (entries with a non-zero `source`) may start it. */
#define STANCE_EXEC_FROM_ONLY (1 << 0)

#define STANCE_NET_PORTS 16

/* Key of the LPM trie `net_rules`: prefixlen counts bits from policy_id on, so a rule's prefix
 * length is 64 + the address prefix (IPv4 as ::ffff:a.b.c.d, prefix 96 + n). */
struct stance_net_key {
	__u32 prefixlen;
	__u32 policy_id;
	__u32 rev;
	__u8 addr[16];
};

struct stance_port_range {
	__u16 lo;
	__u16 hi;
	/* IPPROTO_TCP, IPPROTO_UDP, ...; 0 = any. */
	__u16 protocol;
	__u16 _pad;
};

/* Value of `net_rules`: up to STANCE_NET_PORTS port ranges allowed for this prefix. The trie
 * answers with the longest matching prefix only, so each entry also carries the ranges of every
 * shorter rule prefix that contains it (userspace merges them). */
struct stance_net_rule {
	__u32 n;
	__u32 _pad;
	struct stance_port_range ports[STANCE_NET_PORTS];
};

/* Key of `unix_rules`: an allowed unix socket, by the peer's bound path (the real path of the
 * socket file, resolved in the kernel) or "@name" for the abstract namespace. */
struct stance_unix_key {
	__u32 policy_id;
	__u32 rev;
	struct stance_hash128 path;
};

/* Value of `unix_rules` (presence is the rule). */
struct stance_unix_rule {
	__u32 allowed;
	__u32 _pad;
};

/* Access bit of a unix-socket decision in the decision cache (beside STANCE_ACC_*). */
#define STANCE_ACC_UNIX_PEER (1 << 8)

/* Key of the LRU `decision_cache`: the outcome for one object opened one way under one revision,
 * so repeated opens of the same file cost one lookup instead of a path walk. Only objects with one
 * name per mount are cached (directories, and files with one hard link): their path under that mount
 * is fixed by the key. */
struct stance_decision_key {
	__u32 policy_id;
	__u32 rev;
	__u64 ino;
	/* The struct vfsmount the object was reached through (bind mounts differ). */
	__u64 mnt;
	__u32 dev;
	__u32 generation;
	__u32 access;
	__u32 _pad;
};

struct stance_decision {
	/* 1: allowed; 0: not allowed (denied in enforce, reported in audit). */
	__u32 allow;
	__u32 _pad;
};

/* Key of the LRU `verdict_seen`: repeats of one verdict within the report window are counted, not
 * reported again (the decision is made every time regardless). */
struct stance_verdict_key {
	__u64 cgroup_id;
	__u32 policy_id;
	__u32 rev;
	__u32 domain;
	__u32 detail;
	__u64 a;
	__u64 b;
};

struct stance_verdict_seen {
	__u64 last_ns;
	__u32 suppressed;
	__u32 _pad;
};

/* Value of the one-entry array `enforce_meta`: kept with the pinned maps so that a restarted daemon
 * hashes with the same keys and never reuses a revision. Only userspace reads and writes it. */
struct stance_enforce_meta {
	/* STANCE_META_MAGIC once initialised. */
	__u64 magic;
	__u64 hash_key[4];
	/* The last revision handed out. */
	__u32 last_rev;
	/* The last link generation (links/<generation>/ under the pin directory). */
	__u32 last_generation;
};

#define STANCE_META_MAGIC 0x5354414e43453031ULL

/* Indices of the array `verdict_losses`. */
enum stance_verdict_loss {
	/* bpf_ringbuf_output failed: the reader is behind. The decision was made all the same. */
	STANCE_VLOSS_RINGBUF = 0,
	/* A scratch buffer or kernel object could not be read while building the record. */
	STANCE_VLOSS_READ = 1,
	STANCE_VLOSS_NR = 2,
};

/* A deny or would-deny, reported through the `verdicts` ring buffer. */
struct stance_verdict_event {
	__u64 ts_ns;
	__u64 cgroup_id;
	/* Inode of the object (file, binary, unix socket file); 0 otherwise. */
	__u64 ino;
	/* Device of the object, kernel encoding (major << 20 | minor). */
	__u32 dev;
	__u32 policy_id;
	__u32 rev;
	__u32 domain;
	/* STANCE_MODE_AUDIT: would-deny; STANCE_MODE_ENFORCE: deny. */
	__u32 mode;
	__u32 pid;
	__u32 tgid;
	/* STANCE_V_* */
	__u32 flags;
	/* Capability number, STANCE_ACC_* of a file access, the port of a connect/send, or the
	 * target's tgid of a ptrace. */
	__u32 detail;
	/* Identical verdicts suppressed since the previous report of this one. */
	__u32 repeat;
	/* Destination of a connect/send, ::ffff:a.b.c.d for IPv4. */
	__u8 addr[16];
	__u16 protocol;
	__u16 sock_type;
	__u16 object_len;
	__u16 exe_len;
	char comm[16];
	/* Followed by object_len bytes of the object (path, binary, unix socket path or "@name",
	 * ptrace target's comm), then exe_len bytes of the acting executable's path. */
};

/* The object's path could not be resolved in full (too deep or too long, or the resolver's per-CPU
 * buffer was reused by a program that preempted this one): never allowed. */
#define STANCE_V_TRUNCATED (1 << 0)
/* A datagram send (socket_sendmsg, unix_may_send), not a connect. */
#define STANCE_V_SEND (1 << 1)
/* The record is a unix socket (object is its path, or "@name"). */
#define STANCE_V_UNIX (1 << 2)
/* The check was a probe the kernel does not audit (CAP_OPT_NOAUDIT, PTRACE_MODE_NOAUDIT). */
#define STANCE_V_NOAUDIT (1 << 3)
/* The object has no path (memfd): object is its label. */
#define STANCE_V_ANON (1 << 4)
/* A capability checked against a user namespace other than the initial one. */
#define STANCE_V_CHILD_USERNS (1 << 5)
/* The acting executable's path was cut. */
#define STANCE_V_EXE_TRUNCATED (1 << 6)
/* Reported by the cgroup sock_addr fallback (no executable path there). */
#define STANCE_V_SOCK_ADDR (1 << 7)
/* A ptrace (or /proc/PID access) of another process: object is its comm, detail its tgid. */
#define STANCE_V_PTRACE (1 << 8)
/* A write open of cgroup.procs/cgroup.threads of a cgroup outside the workload (moving a task out
 * of the policy): object is that file's path. */
#define STANCE_V_CGROUP_MOVE (1 << 9)
/* An exec of an allowed binary, refused because the acting executable is not one of its sources
 * (fromSource). */
#define STANCE_V_FROM_SOURCE (1 << 10)
/* With STANCE_V_PTRACE: the target is a process of the same workload (its cgroup has the acting
 * task's policy), so `ptrace: same-workload` would have allowed it. */
#define STANCE_V_SAME_WORKLOAD (1 << 11)

#endif /* STANCE_ENFORCE_H */
