/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The one definition of Stance's enforcement maps and deny/would-deny records, shared by
 * probes-ebpf/src/enforce.bpf.c and (through bindgen) discovery/src/enforce.
 *
 * Model: every cgroup of a workload in audit or enforce has an entry in `cgroup_policy` naming the
 * workload's policy id, the live revision of its rules, and a mode per domain. Rules are keyed by
 * (policy id, revision, ...). An update writes the complete new revision's rules first, then swaps
 * each cgroup's entry to the new revision in one map update, then deletes the old revision: a
 * process sees the old or the new rules, never a mix or nothing. A cgroup without an entry is never
 * touched (observe).
 */
#ifndef STANCE_ENFORCE_H
#define STANCE_ENFORCE_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

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
	__u32 _pad;
};

/* Key of `policy_info` (and the prefix of every rule key). */
struct stance_policy_key {
	__u32 policy_id;
	__u32 rev;
};

/* Value of `policy_info`: per-revision facts that are not per-object rules. */
struct stance_policy_info {
	/* Bit n set: capability n is allowed. */
	__u64 caps_allowed;
	/* STANCE_PTRACE_*: what processes of this workload may trace. */
	__u32 ptrace;
	__u32 _pad;
};

#define STANCE_PTRACE_NONE 0
/* May trace processes of the same workload only. */
#define STANCE_PTRACE_SAME_WORKLOAD 1

/* Paths and other strings are matched by a 128-bit keyed hash (two 64-bit lanes with secret seeds
 * chosen at load time), so a crafted path cannot collide with an allowed one. */
struct stance_hash128 {
	__u64 lo;
	__u64 hi;
};

enum stance_file_rule_kind {
	/* The exact path. */
	STANCE_FILE_EXACT = 0,
	/* Every path under this directory (the directory path without a trailing slash). */
	STANCE_FILE_PREFIX = 1,
};

/* Key of `file_rules`. */
struct stance_file_key {
	__u32 policy_id;
	__u32 rev;
	__u32 kind;
	__u32 _pad;
	struct stance_hash128 path;
};

/* Value of `file_rules`: STANCE_ACC_* bits from stance_events.h (read, write; create and truncate
 * are writes). */
struct stance_file_rule {
	__u32 access;
	__u32 _pad;
};

/* Key of `exec_rules`: an allowed executable, by path hash. */
struct stance_exec_key {
	__u32 policy_id;
	__u32 rev;
	struct stance_hash128 path;
};

/* Value of `exec_rules`. When ino is non-zero the binary must also be that device and inode. */
struct stance_exec_rule {
	__u64 ino;
	__u64 dev;
};

#define STANCE_NET_PORTS 8

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

/* Value of `net_rules`: up to STANCE_NET_PORTS port ranges allowed for this prefix. */
struct stance_net_rule {
	__u32 n;
	__u32 _pad;
	struct stance_port_range ports[STANCE_NET_PORTS];
};

/* Key of `unix_rules`: an allowed unix socket path (filesystem path, or "@name" for abstract). */
struct stance_unix_key {
	__u32 policy_id;
	__u32 rev;
	struct stance_hash128 path;
};

/* A deny or would-deny, reported through the `enforce_events` ring buffer. */
struct stance_verdict_event {
	__u64 ts_ns;
	__u64 cgroup_id;
	__u32 policy_id;
	__u32 rev;
	__u32 domain;
	/* STANCE_MODE_AUDIT: would-deny; STANCE_MODE_ENFORCE: deny. */
	__u32 mode;
	__u32 pid;
	__u32 tgid;
	/* STANCE_V_* */
	__u32 flags;
	/* Capability number, or STANCE_ACC_* of a file access, or the port of a connect. */
	__u32 detail;
	/* Destination of a connect/send, ::ffff:a.b.c.d for IPv4. */
	__u8 addr[16];
	__u16 protocol;
	__u16 exe_len;
	__u16 object_len;
	__u16 _pad;
	/* Followed by exe_len bytes of the acting executable's path and object_len bytes of the
	 * object (path, binary, unix path). */
};

/* The object's path could not be resolved in full (too deep or too long): denied in enforce. */
#define STANCE_V_TRUNCATED (1 << 0)
/* A datagram send (socket_sendmsg), not a connect. */
#define STANCE_V_SEND (1 << 1)
/* The record is a unix socket (object is its path). */
#define STANCE_V_UNIX (1 << 2)

#endif /* STANCE_ENFORCE_H */
