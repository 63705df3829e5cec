// SPDX-License-Identifier: GPL-2.0-only
/*
 * Stance's enforcer: BPF-LSM hooks that decide from kernel objects (the opened struct file,
 * bprm->file, the kernel's copy of a sockaddr, the peer unix socket, the capability being checked),
 * never from syscall arguments, so there is no time-of-check/time-of-use gap.
 *
 * Every hook starts the same way: the current task's cgroup id → `cgroup_policy`. No entry → return
 * 0 at once: workloads that are not in audit or enforce are never touched, and nothing is denied
 * globally. With an entry, the domain's mode decides what a "not allowed" outcome does: audit reports
 * a would-deny and allows; enforce reports a deny and returns -EPERM. Reporting can fail (ring buffer
 * full): that is counted and never changes the decision.
 *
 * Paths that cannot be resolved in full (too deep or too long for the walker) are never allowed.
 *
 * File rules are exact paths, recursive directory rules (looked up at every '/' of the path) and
 * one-level directory rules (looked up at its last '/' only: the direct children, not the directory
 * itself). Paths on procfs are looked up with their all-digit names (pids) as "*". Exec rules may
 * name the executables allowed to start a binary (fromSource), judged by the path of the current
 * task's executable when bprm_check_security runs, i.e. before the new image replaces it.
 *
 * The cgroup/connect{4,6} and cgroup/sendmsg{4,6} programs make the same network decision from the
 * same maps, for kernels where BPF-LSM is not active; they are attached to the cgroup2 root only
 * then. The tp_btf cgroup_mkdir/rmdir programs keep cgroups a workload creates inside its own under
 * its policy, whichever backend enforces.
 *
 * Every LSM program's exit returns a constant (0 or -EPERM): 6.12's verifier requires the return
 * value to be provably within [-4095, 0].
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#include "stance_events.h"
#include "stance_enforce.h"
#include "path.bpf.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by the loader before load. */
/* The daemon's own thread-group id: never enforced on. */
const volatile __u32 stance_tgid = 0;
/* Keys of the two SipHash lanes (see stance_enforce.h). */
const volatile __u64 hash_key[4] = { 0, 0, 0, 0 };
/* Repeats of one verdict within this window are counted, not reported again (0: report all). */
const volatile __u64 verdict_window_ns = 1000ULL * 1000 * 1000;

#define EPERM 1
#define AF_UNSPEC 0
#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define O_CREAT 00000100
#define O_TRUNC 00001000
#define FMODE_READ 0x1
#define FMODE_WRITE 0x2
#define FMODE_EXEC 0x20
/* The open flag the kernel's exec paths use; userspace cannot pass it. */
#define __FMODE_EXEC 0x20
#define MSG_FASTOPEN 0x20000000
#define CAP_OPT_NOAUDIT (1 << 1)
#define PTRACE_MODE_NOAUDIT 0x04
#define CGROUP2_SUPER_MAGIC 0x63677270

enum decision {
	ALLOW = 0,
	/* Not allowed, mode audit: report, allow. */
	WOULD_DENY = 1,
	/* Not allowed, mode enforce: report, deny. */
	DENY = 2,
};

/* ---- maps (layouts in stance_enforce.h) ------------------------------------------------------ */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, STANCE_MAX_CGROUPS);
	__type(key, __u64);
	__type(value, struct stance_cgroup_policy);
	/* Elements are freed after an RCU grace period, so a reader never sees a reused element. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
} cgroup_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, STANCE_MAX_POLICY_REVS);
	__type(key, struct stance_policy_key);
	__type(value, struct stance_policy_info);
} policy_info SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, STANCE_MAX_FILE_RULES);
	__type(key, struct stance_file_key);
	__type(value, struct stance_file_rule);
} file_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, STANCE_MAX_EXEC_RULES);
	__type(key, struct stance_exec_key);
	__type(value, struct stance_exec_rule);
} exec_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, STANCE_MAX_NET_RULES);
	__type(key, struct stance_net_key);
	__type(value, struct stance_net_rule);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} net_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, STANCE_MAX_UNIX_RULES);
	__type(key, struct stance_unix_key);
	__type(value, struct stance_unix_rule);
} unix_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, STANCE_DECISION_CACHE_ENTRIES);
	__type(key, struct stance_decision_key);
	__type(value, struct stance_decision);
} decision_cache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, STANCE_VERDICT_SEEN_ENTRIES);
	__type(key, struct stance_verdict_key);
	__type(value, struct stance_verdict_seen);
} verdict_seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, STANCE_VERDICT_RINGBUF_BYTES);
} verdicts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, STANCE_VLOSS_NR);
	__type(key, __u32);
	__type(value, __u64);
} verdict_losses SEC(".maps");

/* Userspace only: hash keys and counters that must survive a daemon restart. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stance_enforce_meta);
} enforce_meta SEC(".maps");

/* Userspace only: replacing the entry of a map-in-map makes the kernel wait for an RCU grace
 * period (every running non-sleepable program has finished), which is what an update needs
 * between swapping cgroups to a new revision and deleting the old one. */
struct barrier_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct barrier_inner);
} rcu_barrier SEC(".maps");

struct verdict_buf {
	struct stance_verdict_event ev;
	char data[2 * STANCE_PATH_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct verdict_buf);
} verdict_scratch SEC(".maps");

static __always_inline void count_vloss(__u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(&verdict_losses, &reason);
	if (n)
		__sync_fetch_and_add(n, 1);
}

/* ---- who is asking ---------------------------------------------------------------------------- */

struct subject {
	__u64 cgroup_id;
	struct stance_cgroup_policy cp;
	__u32 domain;
	__u32 mode;
};

/* The current task's policy for one domain: 1 when the domain is evaluated for it, 0 when its
 * workload has a policy but this domain is in observe, -1 when it has none (or is the daemon). */
static __always_inline int subject_of_current(struct subject *s, __u32 domain)
{
	s->cgroup_id = bpf_get_current_cgroup_id();
	struct stance_cgroup_policy *p = bpf_map_lookup_elem(&cgroup_policy, &s->cgroup_id);
	if (!p)
		return -1;
	s->cp = *p;
	if ((bpf_get_current_pid_tgid() >> 32) == stance_tgid)
		return -1;
	__u32 mode = s->cp.mode[domain & (STANCE_NDOMAINS - 1)];
	if (mode != STANCE_MODE_AUDIT && mode != STANCE_MODE_ENFORCE)
		return 0;
	s->domain = domain;
	s->mode = mode;
	return 1;
}

static __always_inline int not_allowed(struct subject *s)
{
	return s->mode == STANCE_MODE_ENFORCE ? DENY : WOULD_DENY;
}

/* ---- keyed hashing (SipHash-2-4, two lanes) ---------------------------------------------------- */

struct sip {
	__u64 v0, v1, v2, v3;
};

struct hash_state {
	struct sip a;
	struct sip b;
};

#define ROTL(x, n) (((x) << (n)) | ((x) >> (64 - (n))))

static __always_inline void sip_round(struct sip *s)
{
	s->v0 += s->v1;
	s->v1 = ROTL(s->v1, 13);
	s->v1 ^= s->v0;
	s->v0 = ROTL(s->v0, 32);
	s->v2 += s->v3;
	s->v3 = ROTL(s->v3, 16);
	s->v3 ^= s->v2;
	s->v0 += s->v3;
	s->v3 = ROTL(s->v3, 21);
	s->v3 ^= s->v0;
	s->v2 += s->v1;
	s->v1 = ROTL(s->v1, 17);
	s->v1 ^= s->v2;
	s->v2 = ROTL(s->v2, 32);
}

static __always_inline void sip_init(struct sip *s, __u64 k0, __u64 k1)
{
	s->v0 = k0 ^ 0x736f6d6570736575ULL;
	s->v1 = k1 ^ 0x646f72616e646f6dULL;
	s->v2 = k0 ^ 0x6c7967656e657261ULL;
	s->v3 = k1 ^ 0x7465646279746573ULL;
}

static __always_inline void sip_compress(struct sip *s, __u64 m)
{
	s->v3 ^= m;
	sip_round(s);
	sip_round(s);
	s->v0 ^= m;
}

static __always_inline __u64 sip_finish(struct sip *s, __u64 last)
{
	sip_compress(s, last);
	s->v2 ^= 0xff;
	sip_round(s);
	sip_round(s);
	sip_round(s);
	sip_round(s);
	return s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
}

static __always_inline void hash_init(struct hash_state *h)
{
	sip_init(&h->a, hash_key[0], hash_key[1]);
	sip_init(&h->b, hash_key[2], hash_key[3]);
}

/*
 * The hash of the string whose full 8-byte words are already in h, followed by the `tail` bytes
 * (little-endian, the rest zero), `len` bytes in all. h is left as it was (a prefix's hash is
 * finished off a copy while the walk goes on).
 */
static __always_inline void hash_final(const struct hash_state *h, __u64 tail, __u64 len, struct stance_hash128 *out)
{
	struct sip a = h->a, b = h->b;
	__u64 last = tail | (len << 56);
	out->lo = sip_finish(&a, last);
	out->hi = sip_finish(&b, last);
}

/* Word i of the path wb->buf[start, start + len): 8 bytes, or the 0 to 7 bytes of the last one. */
static __always_inline __u64 path_word(struct walk_buf *wb, __u32 start, __u32 base, __u32 rem)
{
	/* start + base <= 4095 for every word of a path the walker wrote; the buffer has slack after
	 * it, and x86 allows the unaligned load. */
	__u64 w = *(__u64 *)&wb->buf[BOUND(start + base, 4095)];
	if (rem < 8)
		w &= (1ULL << (rem * 8)) - 1;
	return w;
}

/* Absorbs a full word, or finishes the hash with the last one (in place). 1 when finished. */
static __always_inline int hash_step(struct hash_state *h, __u64 w, __u32 rem, __u32 len, struct stance_hash128 *out)
{
	if (rem >= 8) {
		sip_compress(&h->a, w);
		sip_compress(&h->b, w);
		return 0;
	}
	__u64 last = w | ((__u64)len << 56);
	out->lo = sip_finish(&h->a, last);
	out->hi = sip_finish(&h->b, last);
	return 1;
}

/* ---- hashing a resolved path ------------------------------------------------------------------- */

struct hash_ctx {
	struct hash_state h;
	struct walk_buf *wb;
	__u32 start;
	__u32 len;
	__u32 done;
	__u32 _pad;
	struct stance_hash128 out;
};

static long hash_word(__u32 i, void *ctx)
{
	struct hash_ctx *c = ctx;
	__u32 base = i * 8;
	if (base > c->len)
		return 1;
	__u32 rem = c->len - base;
	c->done = hash_step(&c->h, path_word(c->wb, c->start, base, rem), rem, c->len, &c->out);
	return c->done;
}

/* The hash of wb->buf[start, start + len) (exec and unix rules: no prefixes). 0 when complete. */
static __noinline int hash_walked(__u32 start, __u32 len, struct stance_hash128 *out)
{
	__u32 zero = 0;
	struct walk_buf *wb = bpf_map_lookup_elem(&walk_scratch, &zero);
	if (!wb)
		return -1;
	struct hash_ctx c = { .wb = wb, .start = start, .len = len };
	hash_init(&c.h);
	bpf_loop(STANCE_PATH_MAX / 8 + 1, hash_word, &c, 0);
	if (!c.done)
		return -1;
	*out = c.out;
	return 0;
}

/* File rules: the same walk, looking up a directory-prefix rule at every '/' boundary. */
struct scan_ctx {
	struct hash_ctx hc;
	__u32 policy_id;
	__u32 rev;
	/* Union of the access bits of the matching prefix rules. */
	__u32 allowed;
	__u32 _pad;
	/* The hash of the path up to its last '/' so far: at the end, the parent directory's (hashed
	 * like a directory rule), for the one-level rule lookup without a second pass. */
	struct stance_hash128 parent;
};

static __noinline void prefix_rule(struct scan_ctx *c, __u64 tail, __u32 plen)
{
	struct stance_file_key k = {
		.policy_id = c->policy_id,
		.rev = c->rev,
		.kind = STANCE_FILE_PREFIX,
	};
	hash_final(&c->hc.h, tail, plen, &k.path);
	c->parent = k.path;
	struct stance_file_rule *r = bpf_map_lookup_elem(&file_rules, &k);
	if (r)
		c->allowed |= r->access;
}

/*
 * One 8-byte word of the path per call: at each '/' in it the hash of the path so far is finished
 * off a copy and looked up as a directory-prefix rule; then the word is absorbed. The last, partial
 * word (0 to 7 bytes) finishes the full hash.
 */
static long scan_word(__u32 i, void *ctx)
{
	struct scan_ctx *c = ctx;
	__u32 base = i * 8;
	if (base > c->hc.len)
		return 1;
	__u32 rem = c->hc.len - base;
	__u64 w = path_word(c->hc.wb, c->hc.start, base, rem);
#pragma unroll
	for (__u32 j = 0; j < 8; j++) {
		if (j < rem && ((w >> (j * 8)) & 0xff) == '/')
			prefix_rule(c, w & ((1ULL << (j * 8)) - 1), base + j);
	}
	c->hc.done = hash_step(&c->hc.h, w, rem, c->hc.len, &c->hc.out);
	return c->hc.done;
}

/* ---- reporting ---------------------------------------------------------------------------------- */

/* Whether this verdict is due for a report (not a repeat within the window); *repeat gets the count
 * of repeats suppressed since the last report. */
static __noinline int report_due(struct subject *s, __u32 detail, __u64 a, __u64 b, __u32 *repeat)
{
	*repeat = 0;
	if (!verdict_window_ns)
		return 1;
	struct stance_verdict_key k = {
		.cgroup_id = s->cgroup_id,
		.policy_id = s->cp.policy_id,
		.rev = s->cp.rev,
		.domain = s->domain,
		.detail = detail,
		.a = a,
		.b = b,
	};
	__u64 now = bpf_ktime_get_boot_ns();
	struct stance_verdict_seen *v = bpf_map_lookup_elem(&verdict_seen, &k);
	if (v && now - v->last_ns < verdict_window_ns) {
		__sync_fetch_and_add(&v->suppressed, 1);
		return 0;
	}
	if (v)
		*repeat = v->suppressed;
	struct stance_verdict_seen nv = { .last_ns = now };
	bpf_map_update_elem(&verdict_seen, &k, &nv, BPF_ANY);
	return 1;
}

static __always_inline struct verdict_buf *verdict_begin(struct subject *s, __u32 flags, __u32 detail, __u32 repeat)
{
	__u32 zero = 0;
	struct verdict_buf *vb = bpf_map_lookup_elem(&verdict_scratch, &zero);
	if (!vb) {
		count_vloss(STANCE_VLOSS_READ);
		return NULL;
	}
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__builtin_memset(&vb->ev, 0, sizeof(vb->ev));
	vb->ev.ts_ns = bpf_ktime_get_boot_ns();
	vb->ev.cgroup_id = s->cgroup_id;
	vb->ev.policy_id = s->cp.policy_id;
	vb->ev.rev = s->cp.rev;
	vb->ev.domain = s->domain;
	vb->ev.mode = s->mode;
	vb->ev.pid = (__u32)pid_tgid;
	vb->ev.tgid = pid_tgid >> 32;
	vb->ev.flags = flags;
	vb->ev.detail = detail;
	vb->ev.repeat = repeat;
	bpf_get_current_comm(vb->ev.comm, sizeof(vb->ev.comm));
	return vb;
}

/* Appends the object: `len` bytes of the walk buffer from `start`. */
static __always_inline void verdict_object_from_walk(struct verdict_buf *vb, __u32 start, __u32 len)
{
	__u32 zero = 0;
	struct walk_buf *wb = bpf_map_lookup_elem(&walk_scratch, &zero);
	if (!wb)
		return;
	if (len > STANCE_PATH_MAX - 1)
		len = STANCE_PATH_MAX - 1;
	bpf_probe_read_kernel(vb->data, BOUND(len, 4095), &wb->buf[BOUND(start, 4095)]);
	vb->ev.object_len = len;
}

/* Appends the current task's executable path, then sends the record. */
static __noinline void verdict_submit(struct verdict_buf *vb)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct file *exe = task_exe_file(task);
	__u32 off = vb->ev.object_len;
	if (off > STANCE_PATH_MAX - 1)
		off = STANCE_PATH_MAX - 1;
	if (exe) {
		struct walk_result r = {};
		__u32 zero = 0;
		if (resolve_path(BPF_CORE_READ(exe, f_path.dentry), BPF_CORE_READ(exe, f_path.mnt), task, &r) == 0) {
			struct walk_buf *wb = bpf_map_lookup_elem(&walk_scratch, &zero);
			if (wb) {
				__u32 len = r.len;
				if (len > STANCE_PATH_MAX - 1)
					len = STANCE_PATH_MAX - 1;
				bpf_probe_read_kernel(&vb->data[BOUND(off, 4095)], BOUND(len, 4095),
						      &wb->buf[BOUND(r.start, 4095)]);
				vb->ev.exe_len = len;
				if (r.trunc)
					vb->ev.flags |= STANCE_V_EXE_TRUNCATED;
			}
		}
	}
	__u64 size = sizeof(struct stance_verdict_event) + off + vb->ev.exe_len;
	if (size > sizeof(struct verdict_buf))
		size = sizeof(struct verdict_buf);
	if (bpf_ringbuf_output(&verdicts, vb, size, 0))
		count_vloss(STANCE_VLOSS_RINGBUF);
}

/* A verdict whose object is the path the walker left in its buffer. */
struct report {
	__u64 ino;
	__u32 dev;
	__u32 vflags;
	__u32 detail;
	__u32 repeat;
	__u32 start;
	__u32 len;
};

static __noinline void report_walked(struct subject *s, struct report *rp)
{
	struct verdict_buf *vb = verdict_begin(s, rp->vflags, rp->detail, rp->repeat);
	if (!vb)
		return;
	vb->ev.ino = rp->ino;
	vb->ev.dev = rp->dev;
	verdict_object_from_walk(vb, rp->start, rp->len);
	verdict_submit(vb);
}

/* Resolves a struct path into the walk buffer: 0 with r filled, -1 when it cannot be. */
/*
 * The walk buffer is per CPU. These programs run with migration disabled but, on a kernel with full
 * preemption, another task on the same CPU may run one of them in between and overwrite the buffer.
 * Every use of the buffer takes a ticket; a decision made from a buffer whose ticket changed before
 * the rules were looked up is not trusted (denied, flagged like an unresolvable path).
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} walk_ticket SEC(".maps");

static __always_inline __u64 walk_claim(void)
{
	__u32 zero = 0;
	__u64 *t = bpf_map_lookup_elem(&walk_ticket, &zero);
	if (!t)
		return 0;
	*t += 1;
	return *t;
}

static __always_inline int walk_intact(__u64 ticket)
{
	__u32 zero = 0;
	__u64 *t = bpf_map_lookup_elem(&walk_ticket, &zero);
	return t && ticket && *t == ticket;
}

static __always_inline int walk(struct dentry *dentry, struct vfsmount *mnt, struct walk_result *r, __u64 *ticket)
{
	*ticket = walk_claim();
	return resolve_path(dentry, mnt, bpf_get_current_task_btf(), r);
}

/* The loop callback of the walk file rules are looked up with: procfs pids as "*" (see
 * STANCE_PROC_SUPER_MAGIC). */
static long walk_step_proc(__u32 index, void *ctx)
{
	return walk_step_impl(index, ctx, 1);
}

static __noinline int resolve_path_proc(struct dentry *dentry, struct vfsmount *vfsmnt, struct task_struct *task,
					struct walk_result *res)
{
	return resolve_path_impl(dentry, vfsmnt, task, res, walk_step_proc, 1);
}

static __always_inline int walk_for_rules(struct dentry *dentry, struct vfsmount *mnt, struct walk_result *r,
					  __u64 *ticket)
{
	*ticket = walk_claim();
	return resolve_path_proc(dentry, mnt, bpf_get_current_task_btf(), r);
}

/*
 * The decision cache: the outcome for one object opened one way under one revision. Only objects
 * with one name per mount are cached (directories, files with one link), so that the key (inode,
 * generation, device, the mount it was reached through) fixes the path the rules were matched
 * against. The callers read the inode their own way (direct loads on the file_open path, which runs
 * for every open of an enforced workload); 0 when such an object is not cached.
 */
static __always_inline int cache_key(struct stance_decision_key *k, struct subject *s, __u32 access, __u64 ino,
				     __u32 dev, __u32 generation, struct vfsmount *mnt, __u32 mode, __u32 nlink)
{
	if ((mode & S_IFMT) != S_IFDIR && nlink != 1)
		return 0;
	k->policy_id = s->cp.policy_id;
	k->rev = s->cp.rev;
	k->ino = ino;
	k->mnt = (__u64)mnt;
	k->dev = dev;
	k->generation = generation;
	k->access = access;
	k->_pad = 0;
	return 1;
}

/* 1 allowed, 0 not allowed, -1 unknown. */
static __noinline int cache_get(struct stance_decision_key *k)
{
	struct stance_decision *d = bpf_map_lookup_elem(&decision_cache, k);
	if (!d)
		return -1;
	return d->allow ? 1 : 0;
}

static __noinline void cache_put(struct stance_decision_key *k, int allow)
{
	struct stance_decision d = { .allow = allow };
	bpf_map_update_elem(&decision_cache, k, &d, BPF_ANY);
}

/* ---- file opens ---------------------------------------------------------------------------------- */

/* The access bits of the exact rule for a path, of a directory rule for the path itself, and of a
 * one-level rule for its parent directory (none for "/", which has no parent). */
static __noinline __u32 whole_path_rules(struct subject *s, struct stance_hash128 *path,
					 struct stance_hash128 *parent, __u32 has_parent)
{
	struct stance_file_key k = {
		.policy_id = s->cp.policy_id,
		.rev = s->cp.rev,
		.kind = STANCE_FILE_EXACT,
		.path = *path,
	};
	__u32 allowed = 0;
	struct stance_file_rule *rule = bpf_map_lookup_elem(&file_rules, &k);
	if (rule)
		allowed |= rule->access;
	k.kind = STANCE_FILE_PREFIX;
	rule = bpf_map_lookup_elem(&file_rules, &k);
	if (rule)
		allowed |= rule->access;
	if (has_parent) {
		k.kind = STANCE_FILE_CHILDREN;
		k.path = *parent;
		rule = bpf_map_lookup_elem(&file_rules, &k);
		if (rule)
			allowed |= rule->access;
	}
	return allowed;
}

/* The access bits the file rules of this revision grant to the walked path (exact rule, the
 * directory rules of every prefix, and of the path itself as a directory, the one-level rule of its
 * parent); -1 if not hashable. */
static __noinline int file_rules_allow(struct subject *s, __u32 start, __u32 len)
{
	__u32 zero = 0;
	struct walk_buf *wb = bpf_map_lookup_elem(&walk_scratch, &zero);
	if (!wb)
		return -1;
	struct scan_ctx c = {
		.hc = { .wb = wb, .start = start, .len = len },
		.policy_id = s->cp.policy_id,
		.rev = s->cp.rev,
	};
	hash_init(&c.hc.h);
	bpf_loop(STANCE_PATH_MAX / 8 + 1, scan_word, &c, 0);
	if (!c.hc.done)
		return -1;
	return (c.allowed | whole_path_rules(s, &c.hc.out, &c.parent, len > 1)) & 0xffff;
}

/*
 * Whatever its file mode, a process of a workload in audit or enforce may not move tasks into a
 * cgroup outside the workload (a write open of cgroup.procs or cgroup.threads there): the moved
 * task would leave the policy behind. Cgroups the workload creates inside its own are its own
 * (see stance_cgroup_inherit). Reported in the process domain, enforced if any domain is.
 */
static __noinline int decide_cgroup_move(struct file *file)
{
	struct subject subject = {};
	struct subject *s = &subject;
	/* Any policy at all (the file domain may be in observe). */
	if (subject_of_current(s, STANCE_DOM_FILE) < 0)
		return ALLOW;
	struct dentry *d = file->f_path.dentry;
	char name[16] = {};
	bpf_probe_read_kernel_str(name, sizeof(name), BPF_CORE_READ(d, d_name.name));
	static const char procs[] = "cgroup.procs";
	static const char threads[] = "cgroup.threads";
	int is_procs = 1, is_threads = 1;
#pragma unroll
	for (int i = 0; i < (int)sizeof(threads); i++) {
		if (i < (int)sizeof(procs) && name[i] != procs[i])
			is_procs = 0;
		if (name[i] != threads[i])
			is_threads = 0;
	}
	if (!is_procs && !is_threads)
		return ALLOW;
	__u64 target = BPF_CORE_READ(d, d_parent, d_inode, i_ino);
	struct stance_cgroup_policy *t = bpf_map_lookup_elem(&cgroup_policy, &target);
	if (t && t->policy_id == s->cp.policy_id)
		return ALLOW;
	s->domain = STANCE_DOM_PROCESS;
	s->mode = STANCE_MODE_AUDIT;
#pragma unroll
	for (int i = 0; i < STANCE_NDOMAINS; i++)
		if (s->cp.mode[i] == STANCE_MODE_ENFORCE)
			s->mode = STANCE_MODE_ENFORCE;
	struct report rp = { .vflags = STANCE_V_CGROUP_MOVE, .detail = STANCE_ACC_WRITE };
	struct walk_result r = {};
	__u64 ticket = 0;
	if (report_due(s, 0, target, 0, &rp.repeat) && walk(d, file->f_path.mnt, &r, &ticket) == 0) {
		rp.start = r.start;
		rp.len = r.len;
		report_walked(s, &rp);
	}
	return not_allowed(s);
}

static __noinline int decide_file_open(struct file *file)
{
	struct subject s = {};
	int evaluate = subject_of_current(&s, STANCE_DOM_FILE);
	if (evaluate <= 0)
		return ALLOW;
	if (!evaluate)
		return ALLOW;
	__u32 fmode = file->f_mode;
	__u32 fflags = file->f_flags;
	/* The kernel opening a binary or its interpreter for exec: the process domain decides. */
	if ((fmode & FMODE_EXEC) || (fflags & __FMODE_EXEC))
		return ALLOW;
	__u32 access = 0;
	if (fmode & FMODE_READ)
		access |= STANCE_ACC_READ;
	if ((fmode & FMODE_WRITE) || (fflags & (O_CREAT | O_TRUNC)))
		access |= STANCE_ACC_WRITE;
	/* An open for neither (O_ACCMODE 3, ioctl only) needs read. */
	if (!access)
		access = STANCE_ACC_READ;

	struct inode *inode = file->f_inode;
	struct vfsmount *mnt = file->f_path.mnt;
	struct report rp = { .detail = access };
	struct stance_decision_key dk;
	int cacheable = 0;
	if (inode) {
		rp.ino = inode->i_ino;
		rp.dev = inode->i_sb->s_dev;
		cacheable = cache_key(&dk, &s, access, rp.ino, rp.dev, inode->i_generation, mnt, inode->i_mode,
				      inode->__i_nlink);
	}
	/* -1: not asked yet; 0/1: whether this deny is reported. */
	int due = -1;
	int cached = cacheable ? cache_get(&dk) : -1;
	if (cached == 1)
		return ALLOW;
	if (cached == 0) {
		/* A known deny: walk the path again only when it is to be reported. */
		due = report_due(&s, access, rp.ino, rp.dev, &rp.repeat);
		if (!due)
			return not_allowed(&s);
	}

	struct walk_result r = {};
	__u64 ticket = 0;
	int allow = 0;
	if (walk_for_rules(file->f_path.dentry, mnt, &r, &ticket) < 0 || r.trunc) {
		rp.vflags |= STANCE_V_TRUNCATED;
	} else if (r.anon) {
		/* No path in any mount (pipe, socket, memfd reached through /proc/self/fd): only a
		 * process that already holds it can open it, and /proc/PID/fd of another process
		 * is governed by ptrace_access_check. */
		allow = 1;
	} else {
		int granted = file_rules_allow(&s, r.start, r.len);
		if (granted < 0 || !walk_intact(ticket))
			rp.vflags |= STANCE_V_TRUNCATED;
		else if ((access & ~(__u32)granted) == 0)
			allow = 1;
	}
	/* An outcome that depends on the path being resolvable is not cached. */
	if (cacheable && !(rp.vflags & STANCE_V_TRUNCATED))
		cache_put(&dk, allow);
	if (allow)
		return ALLOW;
	if (due < 0)
		due = report_due(&s, access, rp.ino, rp.dev, &rp.repeat);
	if (due) {
		/* The report names the path as it was looked up (procfs pids as "*"): a second walk for
		 * the real one doubled what 6.12's verifier had to check in this program. The event's
		 * pid/tgid say whose open it was. */
		rp.start = r.start;
		rp.len = r.len;
		report_walked(&s, &rp);
	}
	return not_allowed(&s);
}

SEC("lsm/file_open")
int BPF_PROG(stance_file_open, struct file *file)
{
	/* Writes on the cgroup2 filesystem first (cheap tests here, before any map lookup). */
	if ((file->f_mode & FMODE_WRITE) && file->f_inode->i_sb->s_magic == CGROUP2_SUPER_MAGIC &&
	    decide_cgroup_move(file) == DENY)
		return -EPERM;
	if (decide_file_open(file) == DENY)
		return -EPERM;
	return 0;
}

/* ---- names: create, link, rename, unlink, truncate ------------------------------------------------- */

/*
 * An open with O_CREAT is decided in file_open, but the kernel creates the inode before that hook
 * runs, so a refused create would leave an empty file behind. And a file's content can be replaced
 * or destroyed without opening it: rename(2) of another file over it, unlink(2), truncate(2) by
 * path, or link(2) of it under a name the workload may write and then an open of that name. Each
 * of these needs write access to every path whose name it creates, replaces or removes, decided
 * here, in the path hooks, before the change is made. The access asked is the same write an open
 * with O_CREAT or O_TRUNC of that path asks, so a policy that allows a workload's creates allows
 * them here too.
 */
static __noinline int decide_name_change(struct dentry *dentry, struct vfsmount *mnt)
{
	struct subject s = {};
	if (subject_of_current(&s, STANCE_DOM_FILE) <= 0)
		return ALLOW;
	struct report rp = { .detail = STANCE_ACC_WRITE };
	struct walk_result r = {};
	__u64 ticket = 0;
	if (walk_for_rules(dentry, mnt, &r, &ticket) < 0 || r.trunc || r.anon) {
		rp.vflags |= STANCE_V_TRUNCATED;
	} else {
		int granted = file_rules_allow(&s, r.start, r.len);
		if (granted < 0 || !walk_intact(ticket))
			rp.vflags |= STANCE_V_TRUNCATED;
		else if (granted & STANCE_ACC_WRITE)
			return ALLOW;
	}
	/* A name being created has no inode yet: the dentry stands for it in the repeat key. */
	struct inode *inode = BPF_CORE_READ(dentry, d_inode);
	if (inode) {
		rp.ino = BPF_CORE_READ(inode, i_ino);
		rp.dev = BPF_CORE_READ(inode, i_sb, s_dev);
	}
	if (report_due(&s, STANCE_ACC_WRITE, rp.ino ? rp.ino : (__u64)dentry, rp.dev, &rp.repeat)) {
		rp.start = r.start;
		rp.len = r.len;
		report_walked(&s, &rp);
	}
	return not_allowed(&s);
}

/* Creates through open(O_CREAT) and mknod(2). Regular files and FIFOs only: a socket's name is
 * made by bind(2) and its use is the network domain's; device nodes need CAP_MKNOD, which is the
 * capabilities domain's. */
SEC("lsm/path_mknod")
int BPF_PROG(stance_path_mknod, const struct path *dir, struct dentry *dentry, umode_t mode, unsigned int dev)
{
	__u32 type = mode & S_IFMT;
	if (type != S_IFREG && type != S_IFIFO && type != 0)
		return 0;
	if (decide_name_change(dentry, BPF_CORE_READ(dir, mnt)) == DENY)
		return -EPERM;
	return 0;
}

/* A unix socket's stale name removed before a bind is the network domain's (see path_mknod);
 * directories are left to rmdir, which is not decided. */
SEC("lsm/path_unlink")
int BPF_PROG(stance_path_unlink, const struct path *dir, struct dentry *dentry)
{
	if (dentry_type(dentry) == S_IFSOCK)
		return 0;
	if (decide_name_change(dentry, BPF_CORE_READ(dir, mnt)) == DENY)
		return -EPERM;
	return 0;
}

/* The new name, and the old one: a file linked under a writable name could be written there. */
SEC("lsm/path_link")
int BPF_PROG(stance_path_link, struct dentry *old_dentry, const struct path *new_dir, struct dentry *new_dentry)
{
	struct vfsmount *mnt = BPF_CORE_READ(new_dir, mnt);
	if (decide_name_change(new_dentry, mnt) == DENY)
		return -EPERM;
	/* link(2) never crosses mounts: the old name is on the same one. */
	if (decide_name_change(old_dentry, mnt) == DENY)
		return -EPERM;
	return 0;
}

/* Both names: the old one is removed, the new one created or replaced (with RENAME_EXCHANGE,
 * both are replaced). A socket's own names are the network domain's, as in unlink, but no socket
 * may be renamed over a file. */
SEC("lsm/path_rename")
int BPF_PROG(stance_path_rename, const struct path *old_dir, struct dentry *old_dentry, const struct path *new_dir,
	     struct dentry *new_dentry)
{
	int old_socket = dentry_type(old_dentry) == S_IFSOCK;
	__u32 new_type = dentry_type(new_dentry);
	if (!old_socket && decide_name_change(old_dentry, BPF_CORE_READ(old_dir, mnt)) == DENY)
		return -EPERM;
	if (new_type == S_IFSOCK || (new_type == 0 && old_socket))
		return 0;
	if (decide_name_change(new_dentry, BPF_CORE_READ(new_dir, mnt)) == DENY)
		return -EPERM;
	return 0;
}

/* truncate(2) by path; ftruncate(2) needs a descriptor opened for writing, decided in file_open. */
SEC("lsm/path_truncate")
int BPF_PROG(stance_path_truncate, const struct path *path)
{
	if (decide_name_change(BPF_CORE_READ(path, dentry), BPF_CORE_READ(path, mnt)) == DENY)
		return -EPERM;
	return 0;
}

/* ---- exec ------------------------------------------------------------------------------------------ */

/* Walks an executable file into the walk buffer; anonymous ones (memfd) are left as their label
 * ("memfd:NAME"). 0, or -1 when the path cannot be resolved in full. */
static __always_inline int walk_exe(struct file *f, struct walk_result *r, __u64 *ticket, __u32 *vflags)
{
	if (walk(BPF_CORE_READ(f, f_path.dentry), BPF_CORE_READ(f, f_path.mnt), r, ticket) < 0 || r->trunc)
		return -1;
	if (r->anon && r->len > 1) {
		if (vflags)
			*vflags |= STANCE_V_ANON;
		r->start += 1;
		r->len -= 1;
	}
	return 0;
}

enum exec_rule_answer {
	EXEC_UNHASHABLE = -1,
	EXEC_NO_RULE = 0,
	EXEC_ALLOWED = 1,
	/* Allowed only when started by one of its sources. */
	EXEC_FROM_ONLY = 2,
};

/* Whether an exec rule allows the walked binary (and its identity, where the rule has one); the key
 * is left with the binary's hash for the fromSource lookup. */
static __noinline int exec_rule_allows(struct subject *s, struct walk_result *r, __u64 ino, __u32 dev,
				       struct stance_exec_key *k)
{
	if (hash_walked(r->start, r->len, &k->path) < 0)
		return EXEC_UNHASHABLE;
	struct stance_exec_rule *rule = bpf_map_lookup_elem(&exec_rules, k);
	if (!rule)
		return EXEC_NO_RULE;
	if (rule->ino && (rule->ino != ino || rule->dev != dev))
		return EXEC_NO_RULE;
	return (rule->flags & STANCE_EXEC_FROM_ONLY) ? EXEC_FROM_ONLY : EXEC_ALLOWED;
}

/* A hash no path or label has (2^-128 odds): what a source that cannot be named hashes to, so that
 * no fromSource entry matches it. */
#define NO_SOURCE_HASH (~0ULL)

/*
 * The hash of the current task's executable path (or memfd label): the one calling execve, since
 * bprm_check_security runs before the new image replaces it; NO_SOURCE_HASH when it has none or
 * its path cannot be resolved or hashed (then no fromSource rule can allow the exec). Walked before
 * the binary, so that the buffer holds the binary's path for a report: one walk more per exec of
 * an enforced workload (exec is rare next to opens).
 *
 * A global function, so the verifier checks it once, on its own, and the caller continues from one
 * state whatever happened inside (a static one would fork the rest of decide_exec per outcome:
 * 6.12 took three times as long to load it).
 */
__noinline int stance_current_exe_hash(struct stance_hash128 *out)
{
	if (!out)
		return 0;
	out->lo = NO_SOURCE_HASH;
	out->hi = NO_SOURCE_HASH;
	struct file *exe = task_exe_file(bpf_get_current_task_btf());
	if (!exe)
		return 0;
	struct walk_result r = {};
	__u64 ticket = 0;
	struct stance_hash128 h = {};
	if (walk_exe(exe, &r, &ticket, NULL) < 0 || hash_walked(r.start, r.len, &h) < 0 || !walk_intact(ticket))
		return 0;
	*out = h;
	return 0;
}

static __noinline int decide_exec(struct linux_binprm *bprm)
{
	struct subject s = {};
	if (subject_of_current(&s, STANCE_DOM_PROCESS) <= 0)
		return ALLOW;
	/* A script: the interpreter it names is checked when the kernel execs that next (this hook
	 * runs again with it), which is what actually runs. */
	if (bprm->buf[0] == '#' && bprm->buf[1] == '!')
		return ALLOW;
	struct file *f = bprm->file;
	if (!f)
		return not_allowed(&s);
	struct report rp = {};
	file_id(f, &rp.ino, &rp.dev);
	struct stance_hash128 source = {};
	stance_current_exe_hash(&source);

	struct walk_result r = {};
	__u64 ticket = 0;
	int allow = 0;
	if (walk_exe(f, &r, &ticket, &rp.vflags) < 0) {
		rp.vflags |= STANCE_V_TRUNCATED;
	} else {
		struct stance_exec_key k = { .policy_id = s.cp.policy_id, .rev = s.cp.rev };
		int ok = exec_rule_allows(&s, &r, rp.ino, rp.dev, &k);
		if (ok < 0 || !walk_intact(ticket)) {
			rp.vflags |= STANCE_V_TRUNCATED;
			ok = EXEC_NO_RULE;
		}
		if (ok == EXEC_FROM_ONLY) {
			k.source = source;
			if (bpf_map_lookup_elem(&exec_rules, &k))
				ok = EXEC_ALLOWED;
			else
				rp.vflags |= STANCE_V_FROM_SOURCE;
		}
		allow = ok == EXEC_ALLOWED;
	}
	if (allow)
		return ALLOW;
	if (report_due(&s, rp.vflags & STANCE_V_FROM_SOURCE, rp.ino, rp.dev, &rp.repeat)) {
		rp.start = r.start;
		rp.len = r.len;
		report_walked(&s, &rp);
	}
	return not_allowed(&s);
}

SEC("lsm/bprm_check_security")
int BPF_PROG(stance_bprm_check, struct linux_binprm *bprm)
{
	if (decide_exec(bprm) == DENY)
		return -EPERM;
	return 0;
}

/* ---- ptrace ---------------------------------------------------------------------------------------- */

static __noinline int decide_ptrace(struct task_struct *child, unsigned int how)
{
	struct subject s = {};
	if (subject_of_current(&s, STANCE_DOM_PROCESS) <= 0)
		return ALLOW;
	/* Same workload: the target's cgroup has this workload's policy. */
	__u64 target_cg = BPF_CORE_READ(child, cgroups, dfl_cgrp, kn, id);
	struct stance_cgroup_policy *tp = bpf_map_lookup_elem(&cgroup_policy, &target_cg);
	int same = tp && tp->policy_id == s.cp.policy_id;
	if (same) {
		struct stance_policy_key pk = { .policy_id = s.cp.policy_id, .rev = s.cp.rev };
		struct stance_policy_info *info = bpf_map_lookup_elem(&policy_info, &pk);
		if (info && info->ptrace == STANCE_PTRACE_SAME_WORKLOAD)
			return ALLOW;
	}
	__u32 target = BPF_CORE_READ(child, tgid);
	/* The report says whether the target was in the workload: only then can a proposal (`ptrace
	 * same-workload`) allow it. */
	__u32 vflags = STANCE_V_PTRACE | ((how & PTRACE_MODE_NOAUDIT) ? STANCE_V_NOAUDIT : 0) |
		       (same ? STANCE_V_SAME_WORKLOAD : 0);
	__u32 repeat = 0;
	if (report_due(&s, target, how & 0x3, 0, &repeat)) {
		struct verdict_buf *vb = verdict_begin(&s, vflags, target, repeat);
		if (vb) {
			long n = bpf_probe_read_kernel_str(vb->data, 16, child->comm);
			vb->ev.object_len = n > 1 ? n - 1 : 0;
			verdict_submit(vb);
		}
	}
	return not_allowed(&s);
}

SEC("lsm/ptrace_access_check")
int BPF_PROG(stance_ptrace_access_check, struct task_struct *child, unsigned int mode)
{
	if (decide_ptrace(child, mode) == DENY)
		return -EPERM;
	return 0;
}

/* ---- capabilities -------------------------------------------------------------------------------- */

static __noinline int decide_capable(const struct cred *cred, struct user_namespace *ns, int cap, unsigned int opts)
{
	struct subject s = {};
	if (subject_of_current(&s, STANCE_DOM_CAPS) <= 0)
		return ALLOW;
	/* Only checks of the task's own credentials: not another task's (has_capability(task, ...),
	 * file credentials) nor credentials the kernel put on temporarily (override_creds, e.g.
	 * overlayfs acting as its mounter). */
	struct task_struct *task = bpf_get_current_task_btf();
	if ((__u64)cred != (__u64)task->real_cred)
		return ALLOW;
	struct stance_policy_key pk = { .policy_id = s.cp.policy_id, .rev = s.cp.rev };
	struct stance_policy_info *info = bpf_map_lookup_elem(&policy_info, &pk);
	if (info && cap >= 0 && cap < 64 && ((info->caps_allowed >> cap) & 1))
		return ALLOW;
	__u32 vflags = (opts & CAP_OPT_NOAUDIT) ? STANCE_V_NOAUDIT : 0;
	if (BPF_CORE_READ(ns, level) > 0)
		vflags |= STANCE_V_CHILD_USERNS;
	__u32 repeat = 0;
	if (report_due(&s, cap, vflags, 0, &repeat)) {
		struct verdict_buf *vb = verdict_begin(&s, vflags, cap, repeat);
		if (vb)
			verdict_submit(vb);
	}
	return not_allowed(&s);
}

SEC("lsm/capable")
int BPF_PROG(stance_capable, const struct cred *cred, struct user_namespace *ns, int cap, unsigned int opts)
{
	if (decide_capable(cred, ns, cap, opts) == DENY)
		return -EPERM;
	return 0;
}

/* ---- network: IPv4 and IPv6 destinations ------------------------------------------------------- */

struct dest {
	__u8 addr[16];
	__u16 port;
	__u16 protocol;
	__u16 sock_type;
	__u16 _pad;
};

static __always_inline int net_allowed(struct subject *s, struct dest *d)
{
	struct stance_net_key k = {
		.prefixlen = 64 + 128,
		.policy_id = s->cp.policy_id,
		.rev = s->cp.rev,
	};
	__builtin_memcpy(k.addr, d->addr, 16);
	struct stance_net_rule *r = bpf_map_lookup_elem(&net_rules, &k);
	if (!r)
		return 0;
	__u32 n = r->n;
	for (__u32 i = 0; i < STANCE_NET_PORTS; i++) {
		if (i >= n)
			break;
		struct stance_port_range *p = &r->ports[i];
		if (d->port >= p->lo && d->port <= p->hi && (!p->protocol || p->protocol == d->protocol))
			return 1;
	}
	return 0;
}

static __always_inline void map_ipv4(__u8 addr[16], __u32 ip4_be)
{
	__builtin_memset(addr, 0, 10);
	addr[10] = 0xff;
	addr[11] = 0xff;
	__builtin_memcpy(addr + 12, &ip4_be, 4);
}

/* A destination that is not allowed: the record to report, when one is due (NULL otherwise). */
static __always_inline struct verdict_buf *net_verdict(struct subject *s, struct dest *d, __u32 vflags)
{
	__u64 a, b;
	__builtin_memcpy(&a, d->addr, 8);
	__builtin_memcpy(&b, d->addr + 8, 8);
	__u32 repeat = 0;
	if (!report_due(s, d->port | ((__u32)d->protocol << 16), a, b ^ vflags, &repeat))
		return NULL;
	struct verdict_buf *vb = verdict_begin(s, vflags, d->port, repeat);
	if (vb) {
		__builtin_memcpy(vb->ev.addr, d->addr, 16);
		vb->ev.protocol = d->protocol;
		vb->ev.sock_type = d->sock_type;
	}
	return vb;
}

/* The LSM hooks' network decision (the record carries the executable's path). */
static __always_inline int net_decide(struct subject *s, struct dest *d, __u32 vflags)
{
	if (net_allowed(s, d))
		return ALLOW;
	struct verdict_buf *vb = net_verdict(s, d, vflags);
	if (vb)
		verdict_submit(vb);
	return not_allowed(s);
}

/* Reads an AF_INET/AF_INET6 destination from a kernel sockaddr. 1: parsed; 0: another family
 * (not governed here); -1: too short to read. */
static __always_inline int parse_inet(void *sa, int len, struct dest *d)
{
	__u16 family = 0;
	if (len < 2 || bpf_probe_read_kernel(&family, sizeof(family), sa))
		return -1;
	if (family == AF_INET) {
		struct sockaddr_in in = {};
		if (len < 8 || bpf_probe_read_kernel(&in, sizeof(in), sa))
			return -1;
		map_ipv4(d->addr, in.sin_addr.s_addr);
		d->port = bpf_ntohs(in.sin_port);
		return 1;
	}
	if (family == AF_INET6) {
		struct sockaddr_in6 in6 = {};
		if (len < 24 || bpf_probe_read_kernel(&in6, 24, sa))
			return -1;
		/* IPv4-mapped addresses are already in the ::ffff:a.b.c.d form the rules use. */
		__builtin_memcpy(d->addr, &in6.sin6_addr, 16);
		d->port = bpf_ntohs(in6.sin6_port);
		return 1;
	}
	return 0;
}

static __always_inline void sock_proto(struct socket *sock, struct dest *d)
{
	d->sock_type = BPF_CORE_READ(sock, type);
	d->protocol = BPF_CORE_READ(sock, sk, sk_protocol);
}

static __noinline int decide_connect(struct socket *sock, struct sockaddr *address, int addrlen)
{
	struct subject s = {};
	if (subject_of_current(&s, STANCE_DOM_NETWORK) <= 0)
		return ALLOW;
	struct dest d = {};
	int parsed = parse_inet(address, addrlen, &d);
	/* Unix sockets are decided by their peer (unix_stream_connect, unix_may_send); AF_UNSPEC
	 * disconnects; other families are not governed by network rules. */
	if (parsed == 0)
		return ALLOW;
	sock_proto(sock, &d);
	if (parsed < 0)
		return not_allowed(&s);
	return net_decide(&s, &d, 0);
}

SEC("lsm/socket_connect")
int BPF_PROG(stance_socket_connect, struct socket *sock, struct sockaddr *address, int addrlen)
{
	if (decide_connect(sock, address, addrlen) == DENY)
		return -EPERM;
	return 0;
}

static __noinline int decide_sendmsg(struct socket *sock, struct msghdr *msg)
{
	struct subject s = {};
	if (subject_of_current(&s, STANCE_DOM_NETWORK) <= 0)
		return ALLOW;
	void *name = BPF_CORE_READ(msg, msg_name);
	if (!name)
		return ALLOW;
	int namelen = BPF_CORE_READ(msg, msg_namelen);
	struct dest d = {};
	sock_proto(sock, &d);
	/* A stream socket ignores a destination, except for TCP Fast Open, which connects with it. */
	if (d.sock_type == SOCK_STREAM && !(BPF_CORE_READ(msg, msg_flags) & MSG_FASTOPEN))
		return ALLOW;
	int parsed = parse_inet(name, namelen, &d);
	if (parsed == 0)
		return ALLOW;
	if (parsed < 0)
		return not_allowed(&s);
	return net_decide(&s, &d, STANCE_V_SEND);
}

SEC("lsm/socket_sendmsg")
int BPF_PROG(stance_socket_sendmsg, struct socket *sock, struct msghdr *msg, int size)
{
	if (decide_sendmsg(sock, msg) == DENY)
		return -EPERM;
	return 0;
}

/* ---- network: unix sockets, by the peer the kernel found ------------------------------------------ */

/* 1 when a unix rule allows the peer named by the walk buffer's [start, start + len), 0 when
 * none does, -1 when it could not be hashed. */
static __noinline int unix_rule_allows(struct subject *s, __u32 start, __u32 len)
{
	struct stance_unix_key k = { .policy_id = s->cp.policy_id, .rev = s->cp.rev };
	if (hash_walked(start, len, &k.path) < 0)
		return -1;
	return bpf_map_lookup_elem(&unix_rules, &k) ? 1 : 0;
}

static __noinline int decide_unix_peer(struct sock *other, __u32 vflags)
{
	struct subject s = {};
	if (subject_of_current(&s, STANCE_DOM_NETWORK) <= 0)
		return ALLOW;
	if (!other)
		return ALLOW;
	struct unix_sock *u = (struct unix_sock *)other;
	struct dentry *dentry = BPF_CORE_READ(u, path.dentry);
	struct vfsmount *mnt = BPF_CORE_READ(u, path.mnt);
	struct report rp = { .vflags = vflags | STANCE_V_UNIX };
	struct walk_result r = {};
	__u64 ticket = 0;
	struct stance_decision_key dk;
	int cacheable = 0;
	int allow = 0;
	if (dentry) {
		/* Bound to a path: the socket file, resolved like any file. */
		struct inode *inode = BPF_CORE_READ(dentry, d_inode);
		if (inode) {
			rp.ino = BPF_CORE_READ(inode, i_ino);
			rp.dev = BPF_CORE_READ(inode, i_sb, s_dev);
			cacheable = cache_key(&dk, &s, STANCE_ACC_UNIX_PEER, rp.ino, rp.dev,
					      BPF_CORE_READ(inode, i_generation), mnt, BPF_CORE_READ(inode, i_mode),
					      BPF_CORE_READ(inode, __i_nlink));
			if (cacheable && cache_get(&dk) == 1)
				return ALLOW;
		}
		if (walk(dentry, mnt, &r, &ticket) < 0 || r.trunc)
			rp.vflags |= STANCE_V_TRUNCATED;
	} else {
		/* Abstract name (or unbound: a socketpair peer, allowed): "@" and the name, in the
		 * walk buffer so it is hashed and reported like a path. */
		struct unix_address *addr = BPF_CORE_READ(u, addr);
		if (!addr)
			return ALLOW;
		int alen = BPF_CORE_READ(addr, len);
		/* sun_family (2 bytes), the leading NUL, then the name. */
		__u32 nlen = alen > 3 ? alen - 3 : 0;
		if (nlen > STANCE_UNIX_PATH_MAX)
			nlen = STANCE_UNIX_PATH_MAX;
		__u32 zero = 0;
		struct walk_buf *wb = bpf_map_lookup_elem(&walk_scratch, &zero);
		if (!wb)
			return not_allowed(&s);
		ticket = walk_claim();
		wb->buf[0] = '@';
		void *name = (void *)addr + bpf_core_field_offset(struct unix_address, name) + 3;
		if (nlen)
			bpf_probe_read_kernel(&wb->buf[1], BOUND(nlen, 127), name);
		r.len = nlen + 1;
	}
	if (!(rp.vflags & STANCE_V_TRUNCATED)) {
		int ok = unix_rule_allows(&s, r.start, r.len);
		if (ok < 0 || !walk_intact(ticket)) {
			rp.vflags |= STANCE_V_TRUNCATED;
			ok = 0;
		}
		allow = ok == 1;
		if (cacheable && !(rp.vflags & STANCE_V_TRUNCATED))
			cache_put(&dk, allow);
	}
	if (allow)
		return ALLOW;
	if (report_due(&s, rp.vflags, rp.ino ? rp.ino : r.len, rp.dev, &rp.repeat)) {
		rp.start = r.start;
		rp.len = r.len;
		report_walked(&s, &rp);
	}
	return not_allowed(&s);
}

SEC("lsm/unix_stream_connect")
int BPF_PROG(stance_unix_stream_connect, struct sock *sock, struct sock *other, struct sock *newsk)
{
	if (decide_unix_peer(other, 0) == DENY)
		return -EPERM;
	return 0;
}

SEC("lsm/unix_may_send")
int BPF_PROG(stance_unix_may_send, struct socket *sock, struct socket *other)
{
	if (decide_unix_peer(BPF_CORE_READ(other, sk), STANCE_V_SEND) == DENY)
		return -EPERM;
	return 0;
}

/* ---- network fallback: cgroup sock_addr programs (where BPF-LSM is not active) ------------------ */

static __always_inline int sock_addr_subject(struct subject *s)
{
	s->cgroup_id = bpf_get_current_cgroup_id();
	struct stance_cgroup_policy *p = bpf_map_lookup_elem(&cgroup_policy, &s->cgroup_id);
	if (!p)
		return 0;
	s->cp = *p;
	if ((bpf_get_current_pid_tgid() >> 32) == stance_tgid)
		return 0;
	__u32 mode = s->cp.mode[STANCE_DOM_NETWORK];
	if (mode != STANCE_MODE_AUDIT && mode != STANCE_MODE_ENFORCE)
		return 0;
	s->domain = STANCE_DOM_NETWORK;
	s->mode = mode;
	return 1;
}

/* The same decision as the LSM hooks, for the cgroup programs (which cannot walk the executable's
 * path: their records carry comm only). */
static __always_inline int decide_sock_addr(struct bpf_sock_addr *ctx, int v6, __u32 vflags)
{
	struct subject s = {};
	if (!sock_addr_subject(&s))
		return ALLOW;
	struct dest d = {};
	if (v6) {
		__u32 ip6[4];
		ip6[0] = ctx->user_ip6[0];
		ip6[1] = ctx->user_ip6[1];
		ip6[2] = ctx->user_ip6[2];
		ip6[3] = ctx->user_ip6[3];
		__builtin_memcpy(d.addr, ip6, 16);
	} else {
		map_ipv4(d.addr, ctx->user_ip4);
	}
	d.port = bpf_ntohs((__u16)ctx->user_port);
	d.protocol = ctx->protocol;
	d.sock_type = ctx->type;
	if (net_allowed(&s, &d))
		return ALLOW;
	struct verdict_buf *vb = net_verdict(&s, &d, vflags | STANCE_V_SOCK_ADDR);
	if (vb && bpf_ringbuf_output(&verdicts, vb, sizeof(struct stance_verdict_event), 0))
		count_vloss(STANCE_VLOSS_RINGBUF);
	return not_allowed(&s);
}

static __noinline int decide_connect4(struct bpf_sock_addr *ctx)
{
	return decide_sock_addr(ctx, 0, 0);
}

static __noinline int decide_connect6(struct bpf_sock_addr *ctx)
{
	return decide_sock_addr(ctx, 1, 0);
}

static __noinline int decide_sendmsg4(struct bpf_sock_addr *ctx)
{
	return decide_sock_addr(ctx, 0, STANCE_V_SEND);
}

static __noinline int decide_sendmsg6(struct bpf_sock_addr *ctx)
{
	return decide_sock_addr(ctx, 1, STANCE_V_SEND);
}

/* cgroup sock_addr programs: 1 lets the call through, 0 fails it with EPERM. */
SEC("cgroup/connect4")
int stance_connect4(struct bpf_sock_addr *ctx)
{
	if (decide_connect4(ctx) == DENY)
		return 0;
	return 1;
}

SEC("cgroup/connect6")
int stance_connect6(struct bpf_sock_addr *ctx)
{
	if (decide_connect6(ctx) == DENY)
		return 0;
	return 1;
}

SEC("cgroup/sendmsg4")
int stance_sendmsg4(struct bpf_sock_addr *ctx)
{
	if (decide_sendmsg4(ctx) == DENY)
		return 0;
	return 1;
}

SEC("cgroup/sendmsg6")
int stance_sendmsg6(struct bpf_sock_addr *ctx)
{
	if (decide_sendmsg6(ctx) == DENY)
		return 0;
	return 1;
}

/* ---- cgroups created inside an enforced workload belong to it ------------------------------------ */

/*
 * A cgroup made under a cgroup that has an entry gets a copy of it (flagged inherited) before
 * mkdir returns, so no task can be moved there and escape the policy, however fast. Runs wherever
 * BTF tracepoints load (also on kernels without BPF-LSM: the network fallback reads the same map).
 */
SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(stance_cgroup_inherit, struct cgroup *cgrp, const char *path)
{
	/* Only the unified hierarchy has the ids bpf_get_current_cgroup_id() returns. */
	if (BPF_CORE_READ(cgrp, root, hierarchy_id) != 0)
		return 0;
	__u64 parent = BPF_CORE_READ(cgrp, self.parent, cgroup, kn, id);
	struct stance_cgroup_policy *p = bpf_map_lookup_elem(&cgroup_policy, &parent);
	if (!p)
		return 0;
	struct stance_cgroup_policy v = *p;
	v.flags |= STANCE_CG_INHERITED;
	__u64 id = BPF_CORE_READ(cgrp, kn, id);
	bpf_map_update_elem(&cgroup_policy, &id, &v, BPF_NOEXIST);
	return 0;
}

/* An inherited entry goes with its cgroup (the daemon removes the ones it made). */
SEC("tp_btf/cgroup_rmdir")
int BPF_PROG(stance_cgroup_forget, struct cgroup *cgrp, const char *path)
{
	if (BPF_CORE_READ(cgrp, root, hierarchy_id) != 0)
		return 0;
	__u64 id = BPF_CORE_READ(cgrp, kn, id);
	struct stance_cgroup_policy *p = bpf_map_lookup_elem(&cgroup_policy, &id);
	if (p && (p->flags & STANCE_CG_INHERITED))
		bpf_map_delete_elem(&cgroup_policy, &id);
	return 0;
}
