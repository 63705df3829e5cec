// SPDX-License-Identifier: GPL-2.0-only
/*
 * Stance's observation probes. Everything here only watches: no program changes an outcome.
 *
 * Paths are resolved from kernel objects (the opened struct file, bprm->file, mm->exe_file) by
 * walking dentries and crossing mounts, up to the acting task's root, so relative paths, symlinks,
 * /proc/self/fd/N and /proc/self/root/... all arrive as the real absolute path. The syscall exit
 * hooks only tell us *that* an open/connect happened and its result; the object comes from
 * the kernel's own state after the call, never from re-reading what the caller passed (except for
 * failed calls, where no object exists; those are flagged STANCE_F_UNRESOLVED).
 *
 * Opens and network calls are seen by one of three hooks, chosen per family by the loader, never
 * two: where fexit loads, in the kernel function every such call passes through (do_filp_open for
 * opens, __sys_connect_file for connects; io_uring's calls pass there too) with the kernel's own
 * objects as arguments; else fexit on the syscalls' x86_64 entry functions (__x64_sys_*); else the
 * syscall exit tracepoints. Attaching any syscall tracepoint puts every syscall of every task on the
 * kernel's slow entry/exit path, whatever the program does; an fexit trampoline costs only the
 * calls it is attached to. Every hook of a family hands one function (emit_open, emit_net) what it
 * saw, so the records are the same whichever hook ran.
 *
 * Repeats are suppressed in the kernel, keyed by (cgroup, kind, object, actor), by a per-CPU cache
 * in front of a per-CPU LRU, so repeated behaviour costs an array lookup and leaves the ring buffer
 * quiet. Every event that cannot be delivered is counted per cgroup.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#include "stance_events.h"
#include "path.bpf.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by the loader before load (aya EbpfLoader::set_global). */
/* The daemon's own thread-group id: its activity is not observed. */
const volatile __u32 stance_tgid = 0;
/* Repeats of the same key within this window are counted, not emitted. In jiffies (see dedup_pass):
 * the loader converts the daemon's window with this kernel's tick; the default is 10 s at HZ=250. */
const volatile __u64 dedup_window_jiffies = 10 * 250;
/* argv bytes kept per exec (<= STANCE_ARGV_MAX). */
const volatile __u32 argv_max = 512;
/* Wake the reader only when this much is waiting; otherwise it drains on its own timer. A wakeup
 * is an irq_work (a self-IPI, a VM exit on virtual machines): microseconds per event if done for
 * every record. */
const volatile __u64 wakeup_bytes = 1 << 20;

#define AT_FDCWD -100
#define O_ACCMODE 00000003
#define O_WRONLY 00000001
#define O_RDWR 00000002
#define O_CREAT 00000100
#define O_TRUNC 00001000
#define O_PATH 010000000
#define FMODE_READ 0x1
#define FMODE_WRITE 0x2
#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define MSG_FASTOPEN 0x20000000

/* x86_64 syscall numbers, used to check that the pt_regs we found belong to this syscall. */
#define NR_open 2
#define NR_connect 42
#define NR_sendto 44
#define NR_sendmsg 46
#define NR_creat 85
#define NR_openat 257
#define NR_open_by_handle_at 304
#define NR_sendmmsg 307
#define NR_openat2 437

#define OUT_DATA (4 * STANCE_PATH_MAX + STANCE_PATH_MAX)

struct out_buf {
	struct stance_event_header hdr;
	__u8 body[STANCE_BODY_SIZE];
	char data[OUT_DATA];
};

struct ustr_buf {
	char buf[STANCE_PATH_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct out_buf);
} out_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ustr_buf);
} ustr_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, STANCE_DEDUP_ENTRIES);
	__type(key, struct stance_dedup_key);
	__type(value, struct stance_dedup_val);
} dedup SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct stance_losses);
} cgroup_losses SEC(".maps");

/* Losses that could not be attributed to a cgroup (cgroup_losses itself failed). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STANCE_LOSS_NR);
	__type(key, __u32);
	__type(value, __u64);
} unattributed_losses SEC(".maps");


static __always_inline void count_loss(__u64 cgroup_id, __u32 reason)
{
	struct stance_losses *l = bpf_map_lookup_elem(&cgroup_losses, &cgroup_id);
	if (!l) {
		struct stance_losses zero = {};
		bpf_map_update_elem(&cgroup_losses, &cgroup_id, &zero, BPF_NOEXIST);
		l = bpf_map_lookup_elem(&cgroup_losses, &cgroup_id);
	}
	if (l && reason < STANCE_LOSS_NR) {
		__sync_fetch_and_add(&l->count[reason], 1);
		return;
	}
	__u64 *u = bpf_map_lookup_elem(&unattributed_losses, &reason);
	if (u)
		*u += 1;
}

/* ---- assembling a record -------------------------------------------------------------------- */

struct builder {
	struct out_buf *out;
	__u32 off;
};

static __always_inline void put_bytes(struct builder *b, __u32 idx, const void *src, __u32 len, int user)
{
	if (len > STANCE_PATH_MAX - 1)
		len = STANCE_PATH_MAX - 1;
	__u32 off = b->off;
	if (off > 3 * STANCE_PATH_MAX + STANCE_ARGV_MAX)
		return;
	if (user)
		bpf_probe_read_user(&b->out->data[BOUND(off, 16383)], BOUND(len, 4095), src);
	else
		bpf_probe_read_kernel(&b->out->data[BOUND(off, 16383)], BOUND(len, 4095), src);
	b->out->hdr.len[idx & (STANCE_NSTR - 1)] = len;
	b->off = off + len;
}

/* Walk a path and append it as string idx. Returns STANCE_F_* bits to add (trunc/anon). */
static __always_inline __u32 put_path(struct builder *b, __u32 idx, struct dentry *dentry, struct vfsmount *mnt,
				      struct task_struct *task, __u32 trunc_flag)
{
	struct walk_result r = {};
	__u32 zero = 0;
	if (resolve_path(dentry, mnt, task, &r) < 0)
		return 0;
	struct walk_buf *wb = bpf_map_lookup_elem(&walk_scratch, &zero);
	if (!wb)
		return 0;
	put_bytes(b, idx, &wb->buf[BOUND(r.start, 4095)], r.len, 0);
	__u32 flags = 0;
	if (r.trunc)
		flags |= trunc_flag;
	if (r.anon && idx == STANCE_STR_OBJECT)
		flags |= STANCE_F_ANON;
	return flags;
}



/*
 * Two fields of one struct with a single probe read of the span that holds both (their offsets
 * come from CO-RE, so the span fits every kernel's layout); falls back to two reads if the fields
 * are ever further apart than the span. Every suppressed repeat pays for these reads, so they count.
 */
#define SPAN 64
#define READ_PAIR(ptr, type, fa, va, fb, vb)                                                         \
	({                                                                                          \
		__u32 __oa = bpf_core_field_offset(type, fa), __ob = bpf_core_field_offset(type, fb); \
		__u32 __lo = __oa < __ob ? __oa : __ob;                                             \
		__u32 __hi = __oa < __ob ? __ob + sizeof(vb) : __oa + sizeof(va);                   \
		if (__hi - __lo <= SPAN) {                                                          \
			/* Not zeroed first: the helper fills it (zeroes on failure). */         \
			__u8 __buf[SPAN];                                                           \
			bpf_probe_read_kernel(__buf, SPAN, (void *)(ptr) + __lo);                   \
			__builtin_memcpy(&(va), __buf + ((__oa - __lo) & (SPAN - 1)), sizeof(va));  \
			__builtin_memcpy(&(vb), __buf + ((__ob - __lo) & (SPAN - 1)), sizeof(vb));  \
		} else {                                                                            \
			va = BPF_CORE_READ((type *)(ptr), fa);                                      \
			vb = BPF_CORE_READ((type *)(ptr), fb);                                      \
		}                                                                                   \
	})

/* The opened file's mode, inode number and superblock (the filesystem's identity for dedup keys:
 * s_dev itself is only read when an event is emitted). */
static __always_inline void file_quick_id(struct file *f, __u32 *fmode, __u64 *ino, __u64 *sb)
{
	struct inode *inode = NULL;
	__u32 mode = 0;
	READ_PAIR(f, struct file, f_mode, mode, f_inode, inode);
	*fmode = mode;
	if (!inode)
		return;
	unsigned long i_ino = 0;
	struct super_block *i_sb = NULL;
	READ_PAIR(inode, struct inode, i_ino, i_ino, i_sb, i_sb);
	*ino = i_ino;
	*sb = (__u64)i_sb;
}


/* Start a record for the current task: header fields common to every kind. */
static __always_inline struct out_buf *begin(__u32 kind, __u64 cgroup_id, struct task_struct *task, struct builder *b)
{
	__u32 zero = 0;
	struct out_buf *out = bpf_map_lookup_elem(&out_scratch, &zero);
	if (!out)
		return NULL;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	out->hdr.ts_ns = bpf_ktime_get_boot_ns();
	out->hdr.cgroup_id = cgroup_id;
	out->hdr.kind = kind;
	out->hdr.flags = 0;
	out->hdr.pid = (__u32)pid_tgid;
	out->hdr.tgid = pid_tgid >> 32;
	out->hdr.ppid = BPF_CORE_READ(task, real_parent, tgid);
	out->hdr.uid = (__u32)bpf_get_current_uid_gid();
	out->hdr.ret = 0;
	out->hdr.repeat = 0;
	out->hdr.exe_ino = 0;
	out->hdr.exe_dev = 0;
	out->hdr.len[0] = 0;
	out->hdr.len[1] = 0;
	out->hdr.len[2] = 0;
	out->hdr.len[3] = 0;
	out->hdr._pad = 0;
	__builtin_memset(&out->hdr.dedup, 0, sizeof(out->hdr.dedup));
	bpf_get_current_comm(out->hdr.comm, sizeof(out->hdr.comm));
	__builtin_memset(out->body, 0, sizeof(out->body));
	b->out = out;
	b->off = 0;
	return out;
}

/* Append the acting executable's path as STANCE_STR_EXE. */
static __always_inline void put_exe(struct builder *b, struct task_struct *task)
{
	struct file *exe = task_exe_file(task);
	if (!exe)
		return;
	file_id(exe, &b->out->hdr.exe_ino, &b->out->hdr.exe_dev);
	b->out->hdr.flags |= put_path(b, STANCE_STR_EXE, BPF_CORE_READ(exe, f_path.dentry), BPF_CORE_READ(exe, f_path.mnt),
				      task, STANCE_F_EXE_TRUNC);
}

static __always_inline int submit(struct builder *b, __u64 cgroup_id)
{
	__u64 size = sizeof(struct stance_event_header) + STANCE_BODY_SIZE + b->off;
	if (size > sizeof(struct out_buf))
		size = sizeof(struct out_buf);
	__u64 flags = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP
										       : BPF_RB_NO_WAKEUP;
	long err = bpf_ringbuf_output(&events, b->out, size, flags);
	if (err) {
		count_loss(cgroup_id, STANCE_LOSS_RINGBUF);
		return -1;
	}
	return 0;
}

/* ---- dedup ------------------------------------------------------------------------------------ */

/*
 * Every open and network call of a monitored workload runs the check below, and in repeated
 * behaviour almost every one of them is suppressed: this is the path whose cost a workload feels.
 *
 * The clock is jiffies, read from one kernel variable (bpf_jiffies64), not the clocksource that
 * bpf_ktime_get_boot_ns reads (a trap to the hypervisor per event on a virtual machine whose
 * clocksource is emulated, HPET for one). A window of seconds needs no finer resolution. A window
 * of 0 turns dedup off.
 *
 * In front of the LRU hash sits a small per-CPU direct-mapped cache: each key has exactly one
 * slot (a mix of its fields), and the slot holding it is the key's only live state, so a repeat
 * that hits costs an array lookup and a compare instead of hashing the key into the LRU. The cache
 * writes back: a key pushed out of its slot by another takes its window start and suppressed count
 * to the LRU hash, and a key moving into its slot takes them from there, so no count is dropped on
 * the way. The count reaches userspace as the `repeat` of the key's next emitted record.
 *
 * At a clean stop there is no next record: once the programs are detached, the daemon reads every
 * slot and every LRU entry on every CPU and adds the counts still held to the edges their keys
 * were last emitted as (each emitted record carries its key for that; this path does no more work
 * for it). Counts of entries the LRU evicted while the daemon ran are lost and cannot be seen.
 *
 * Both are per CPU and unlocked: a program on another CPU never sees this CPU's state. The
 * programs that use them run with migration disabled, and on kernels without in-kernel preemption
 * (Debian's default) one program finishes before the next starts on the same CPU.
 */
#define DEDUP_SLOTS STANCE_DEDUP_SLOTS

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DEDUP_SLOTS);
	__type(key, __u32);
	__type(value, struct stance_dedup_slot);
} dedup_cache SEC(".maps");

static __always_inline __u32 dedup_slot_of(const struct stance_dedup_key *k)
{
	__u64 h = k->cgroup_id ^ k->obj_a ^ (k->obj_b >> 4) ^ (k->exe_ino << 7) ^ k->exe_dev ^
		  ((__u64)k->kind_bits << 32);
	h *= 0x9e3779b97f4a7c15ULL;
	return (__u32)(h >> 56) & (DEDUP_SLOTS - 1);
}

static __always_inline int dedup_key_eq(const struct stance_dedup_key *a, const struct stance_dedup_key *b)
{
	return a->obj_a == b->obj_a && a->obj_b == b->obj_b && a->cgroup_id == b->cgroup_id &&
	       a->exe_ino == b->exe_ino && a->exe_dev == b->exe_dev && a->kind_bits == b->kind_bits;
}

#define PF_KTHREAD 0x00200000

/*
 * The daemon's own activity and kernel threads' are not observed. This is checked on a dedup miss,
 * before any state changes, rather than first: such a key then never enters the cache, so it can
 * never hit, and a repeat of the workload's behaviour saves these loads.
 */
static __always_inline int unobserved(struct task_struct *task)
{
	return task->tgid == stance_tgid || (task->flags & PF_KTHREAD);
}

/* Returns 1 when the event should be emitted (and *repeat holds the suppressed count), 0 when it
 * is a repeat within the window or the task is not observed. */
static __always_inline int dedup_pass(struct task_struct *task, const struct stance_dedup_key *k, __u32 *repeat)
{
	__u64 now = bpf_jiffies64();
	__u32 idx = dedup_slot_of(k);
	struct stance_dedup_slot *s = bpf_map_lookup_elem(&dedup_cache, &idx);
	if (!s) {
		*repeat = 0;
		return !unobserved(task);
	}
	if (!dedup_key_eq(&s->key, k)) {
		if (unobserved(task))
			return 0;
		/* Miss: the occupant's state goes back to the LRU, this key's state comes from it. */
		if (s->key.kind_bits) {
			struct stance_dedup_val old = { .last_emit = s->last_emit, .suppressed = s->suppressed };
			bpf_map_update_elem(&dedup, &s->key, &old, BPF_ANY);
		}
		struct stance_dedup_val *v = bpf_map_lookup_elem(&dedup, k);
		s->key = *k;
		s->last_emit = v ? v->last_emit : 0;
		s->suppressed = v ? v->suppressed : 0;
	}
	if (s->last_emit && now - s->last_emit < dedup_window_jiffies) {
		s->suppressed += 1;
		return 0;
	}
	*repeat = s->suppressed;
	s->last_emit = now;
	s->suppressed = 0;
	return 1;
}

/* The key goes out with the record, so that what the kernel still holds for it at a clean stop can
 * be attributed. With dedup off nothing is ever held, and the key stays zero (no key). */
static __always_inline void put_dedup_key(struct out_buf *out, const struct stance_dedup_key *k)
{
	if (dedup_window_jiffies)
		out->hdr.dedup = *k;
}

/* The record could not be delivered: let the next occurrence try again rather than be suppressed.
 * (Its suppressed count went out with nothing: that record is counted as a ring-buffer loss.) */
static __always_inline void dedup_forget(const struct stance_dedup_key *k)
{
	__u32 idx = dedup_slot_of(k);
	struct stance_dedup_slot *s = bpf_map_lookup_elem(&dedup_cache, &idx);
	if (s && dedup_key_eq(&s->key, k))
		s->key.kind_bits = 0;
	bpf_map_delete_elem(&dedup, k);
}

/*
 * The dedup check, then the start of the record of an event that passed it: the header with the
 * result, the repeats the kernel counted and the key, and the acting executable (string 0, so it
 * comes first). NULL when the event is a repeat, is not observed, or no buffer is at hand.
 */
static __always_inline struct out_buf *begin_keyed(__u32 kind, __u64 cgroup_id, struct task_struct *task,
						  const struct stance_dedup_key *k, long ret, struct builder *b)
{
	__u32 repeat = 0;
	if (!dedup_pass(task, k, &repeat))
		return NULL;
	struct out_buf *out = begin(kind, cgroup_id, task, b);
	if (!out)
		return NULL;
	out->hdr.ret = ret;
	out->hdr.repeat = repeat;
	put_dedup_key(out, k);
	put_exe(b, task);
	return out;
}

struct hash_ctx {
	const char *s;
	__u64 h;
};

static long hash_step(__u32 i, void *ctx)
{
	struct hash_ctx *c = ctx;
	__u64 w = 0;
	bpf_probe_read_kernel(&w, sizeof(w), c->s + ((i * 8) & (STANCE_PATH_MAX - 8)));
	c->h ^= w;
	c->h *= 0x100000001b3ULL;
	return 0;
}

/*
 * FNV-1a over 8-byte words of a string in a per-CPU buffer (bytes past len are whatever the
 * buffer held, so len is mixed in too; a collision only merges two dedup entries for one window).
 */
static __noinline __u64 hash_bytes(const char *s, __u32 len)
{
	struct hash_ctx c = { .s = s, .h = 0xcbf29ce484222325ULL };
	__u32 words = (len + 7) / 8;
	if (words > STANCE_PATH_MAX / 8)
		words = STANCE_PATH_MAX / 8;
	bpf_loop(words, hash_step, &c, 0);
	return c.h ^ len;
}

/*
 * What bpf_get_current_cgroup_id() returns (the default hierarchy's cgroup of the task), by direct
 * loads through the task's BTF pointers: the open and network programs need it before their dedup
 * check, so it is on the path every suppressed repeat pays for.
 */
static __always_inline __u64 task_cgroup_id(struct task_struct *task)
{
	return task->cgroups->dfl_cgrp->kn->id;
}

/*
 * An fexit program's argument i as a number, read from its slot. The verifier types a pointer
 * argument by its BTF and refuses arithmetic on it (an offset into an address, an ERR_PTR's errno).
 */
#define CTX_NUM(i)                                                      \
	({                                                              \
		__u64 __v = 0;                                          \
		bpf_probe_read_kernel(&__v, sizeof(__v), &ctx[i]);      \
		__v;                                                    \
	})

/* ---- syscall arguments from the saved user registers ------------------------------------------ */

/*
 * At sys_exit the user registers are still saved on the task's kernel stack, where
 * bpf_task_pt_regs() finds them (the kernel knows its own stack layout, FRED's included). Reading
 * the arguments there saves a sys_enter program (and its hash map) per syscall. The helper returns
 * a BTF pointer, so the registers are plain loads; orig_ax must be this syscall's number.
 */
/* The six argument registers of the x86_64 syscall ABI, from a struct pt_regs. */
#define ARGS_FROM(r, args)          \
	do {                        \
		(args)[0] = (r)->di;  \
		(args)[1] = (r)->si;  \
		(args)[2] = (r)->dx;  \
		(args)[3] = (r)->r10; \
		(args)[4] = (r)->r8;  \
		(args)[5] = (r)->r9;  \
	} while (0)

static __always_inline int syscall_args(struct task_struct *task, long nr, __u64 args[6])
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	if (!regs || (long)regs->orig_ax != nr)
		return -1;
	ARGS_FROM(regs, args);
	return 0;
}

/*
 * The syscall's arguments: from the registers an fexit program on __x64_sys_* was handed (regs),
 * or, at a syscall exit tracepoint (regs NULL), from those saved on the task's kernel stack.
 * regs is a BTF pointer there, so its fields are plain loads, not a helper call.
 */
static __always_inline int user_args(struct task_struct *task, const struct pt_regs *regs, long nr, __u64 args[6])
{
	if (!regs)
		return syscall_args(task, nr, args);
	ARGS_FROM(regs, args);
	return 0;
}

static __always_inline struct file *fd_file(struct task_struct *task, long fd)
{
	if (fd < 0)
		return NULL;
	/* Direct loads through BTF pointers: task is the current task from bpf_get_current_task_btf(). */
	struct files_struct *files = task->files;
	if (!files)
		return NULL;
	struct fdtable *fdt = files->fdt;
	if (!fdt)
		return NULL;
	unsigned int max = fdt->max_fds;
	if ((unsigned long)fd >= max)
		return NULL;
	struct file **fds = fdt->fd;
	struct file *f = NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

/*
 * For a relative string the caller passed (failed open, unix socket path), append the directory
 * it is relative to, resolved now in the kernel: the cwd for AT_FDCWD, else the dirfd's file.
 */
static __always_inline void put_base_dir(struct builder *b, struct task_struct *task, long dirfd)
{
	if (dirfd == AT_FDCWD) {
		b->out->hdr.flags |= put_path(b, STANCE_STR_AUX, BPF_CORE_READ(task, fs, pwd.dentry),
					      BPF_CORE_READ(task, fs, pwd.mnt), task, STANCE_F_AUX_TRUNC);
		return;
	}
	struct file *dir = fd_file(task, dirfd);
	if (dir)
		b->out->hdr.flags |= put_path(b, STANCE_STR_AUX, BPF_CORE_READ(dir, f_path.dentry),
					      BPF_CORE_READ(dir, f_path.mnt), task, STANCE_F_AUX_TRUNC);
}

/* ---- opens ------------------------------------------------------------------------------------ */

struct open_how_user {
	__u64 flags;
	__u64 mode;
	__u64 resolve;
};

/*
 * Access intent from open flags, without branches (every open computes it for its dedup key): the
 * access mode O_RDONLY 0, O_WRONLY 1, O_RDWR 2 (3 is no access) plus one, modulo 4, is exactly
 * STANCE_ACC_READ 1, STANCE_ACC_WRITE 2, both 3 (none 0); O_CREAT and O_TRUNC shift onto
 * STANCE_ACC_CREATE and STANCE_ACC_TRUNC; O_PATH opens no content, so it clears everything.
 */
_Static_assert(STANCE_ACC_READ == 1 && STANCE_ACC_WRITE == 2 && STANCE_ACC_CREATE == O_CREAT >> 4 &&
		       STANCE_ACC_TRUNC == O_TRUNC >> 6,
	       "access bits are computed by shifts");
static __always_inline __u32 access_from_flags(__u64 flags)
{
	__u32 acc = ((flags & O_ACCMODE) + 1) & 3;
	acc |= (flags & O_CREAT) >> 4;
	acc |= (flags & O_TRUNC) >> 6;
	return (flags & O_PATH) ? 0 : acc;
}

/* One open as a hook saw it, before the dedup check and the record. */
struct open_seen {
	/* The opened file; NULL when the open failed. */
	struct file *f;
	/* The name the caller passed: a user pointer at the syscall hooks, the kernel's copy at
	 * do_filp_open. Read only for a failed open (recorded as unresolved). */
	const char *name;
	int name_is_user;
	int have_args;
	long dirfd;
	__u64 flags;
	/* 0, or -errno. */
	long ret;
	__u32 nr;
	/* The file's f_mode, read by the hook (fmode_later 0) or only when a record is emitted. */
	__u32 fmode;
	int fmode_later;
	__u64 ino;
	/* The filesystem's identity in dedup keys: the superblock's address at the syscall hooks, its
	 * device number at do_filp_open. */
	__u64 sb;
	/* STANCE_OP_OPEN, or the change to a name this record stands for (then access is given in
	 * name_access rather than derived from flags, and the name is always the caller's). */
	__u32 op;
	__u32 name_access;
};

/* Dedup check and record of an open, however it was hooked. */
static __always_inline int emit_open(struct task_struct *task, __u64 cgroup_id, struct open_seen *o)
{
	struct stance_dedup_key k = { .cgroup_id = cgroup_id };
	current_exe_id(task, &k.exe_ino, &k.exe_dev);

	/* op is a constant wherever this is inlined, so an open pays nothing for names. */
	__u32 access = o->op ? o->name_access : o->have_args ? access_from_flags(o->flags) : 0;
	__u32 ulen = 0;
	__u32 zero = 0;
	struct ustr_buf *us = NULL;

	if (o->f) {
		if (!o->have_args) {
			if (o->fmode & FMODE_READ)
				access |= STANCE_ACC_READ;
			if (o->fmode & FMODE_WRITE)
				access |= STANCE_ACC_WRITE;
		}
		k.obj_a = o->ino;
		k.obj_b = o->sb;
	} else {
		if (!o->have_args || !o->name)
			return 0;
		us = bpf_map_lookup_elem(&ustr_scratch, &zero);
		if (!us)
			return 0;
		long n = o->name_is_user ? bpf_probe_read_user_str(us->buf, sizeof(us->buf), o->name)
					 : bpf_probe_read_kernel_str(us->buf, sizeof(us->buf), o->name);
		if (n <= 1)
			return 0;
		ulen = n - 1;
		k.obj_a = hash_bytes(us->buf, ulen);
		k.obj_b = ((__u64)(__u32)o->dirfd << 32) | (__u32)(-o->ret);
	}
	k.kind_bits = (STANCE_EV_OPEN << 16) | (o->op << 8) | access;

	struct builder b;
	struct out_buf *out = begin_keyed(STANCE_EV_OPEN, cgroup_id, task, &k, o->ret, &b);
	if (!out)
		return 0;
	if (!o->have_args)
		out->hdr.flags |= STANCE_F_ARGS_UNKNOWN;

	struct stance_open_body *body = (void *)out->body;
	struct file *f = o->f;
	body->ino = o->ino;
	body->dev = f ? BPF_CORE_READ(f, f_inode, i_sb, s_dev) : 0;
	body->open_flags = (__u32)o->flags;
	body->fmode = o->fmode_later && f ? BPF_CORE_READ(f, f_mode) : o->fmode;
	body->access = access;
	body->syscall_nr = o->nr;
	body->op = o->op;

	if (f) {
		out->hdr.flags |= put_path(&b, STANCE_STR_OBJECT, BPF_CORE_READ(f, f_path.dentry),
					   BPF_CORE_READ(f, f_path.mnt), task, STANCE_F_PATH_TRUNC);
	} else if (us) {
		out->hdr.flags |= STANCE_F_UNRESOLVED;
		put_bytes(&b, STANCE_STR_OBJECT, us->buf, ulen, 0);
		if (us->buf[0] != '/')
			put_base_dir(&b, task, o->dirfd);
	}
	if (submit(&b, cgroup_id))
		dedup_forget(&k);
	return 0;
}

/* An open syscall's exit: its arguments from the saved registers, the file from the fd table. */
static __always_inline int on_open_exit(long ret, long nr, const struct pt_regs *regs)
{
	/* The daemon's own opens are refused by the dedup check (unobserved()). */
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 cgroup_id = task_cgroup_id(task);

	__u64 args[6] = {};
	struct open_seen o = { .dirfd = AT_FDCWD, .name_is_user = 1, .nr = nr, .ret = ret < 0 ? ret : 0 };
	o.have_args = user_args(task, regs, nr, args) == 0;
	switch (nr) {
	case NR_open:
		o.name = (const char *)args[0];
		o.flags = args[1];
		break;
	case NR_openat:
		o.dirfd = (int)args[0];
		o.name = (const char *)args[1];
		o.flags = args[2];
		break;
	case NR_openat2: {
		struct open_how_user how = {};
		o.dirfd = (int)args[0];
		o.name = (const char *)args[1];
		if (o.have_args && bpf_probe_read_user(&how, sizeof(how), (void *)args[2]) == 0)
			o.flags = how.flags;
		else
			o.have_args = 0;
		break;
	}
	case NR_creat:
		o.name = (const char *)args[0];
		o.flags = O_CREAT | O_WRONLY | O_TRUNC;
		break;
	case NR_open_by_handle_at:
		o.flags = args[2];
		break;
	}

	if (ret >= 0) {
		o.f = fd_file(task, ret);
		if (!o.f) {
			if (!unobserved(task))
				count_loss(cgroup_id, STANCE_LOSS_READ);
			return 0;
		}
		file_quick_id(o.f, &o.fmode, &o.ino, &o.sb);
	}
	return emit_open(task, cgroup_id, &o);
}

SEC("tracepoint/syscalls/sys_exit_open")
int stance_exit_open(struct trace_event_raw_sys_exit *ctx)
{
	return on_open_exit(ctx->ret, NR_open, NULL);
}

SEC("tracepoint/syscalls/sys_exit_openat")
int stance_exit_openat(struct trace_event_raw_sys_exit *ctx)
{
	return on_open_exit(ctx->ret, NR_openat, NULL);
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int stance_exit_openat2(struct trace_event_raw_sys_exit *ctx)
{
	return on_open_exit(ctx->ret, NR_openat2, NULL);
}

SEC("tracepoint/syscalls/sys_exit_creat")
int stance_exit_creat(struct trace_event_raw_sys_exit *ctx)
{
	return on_open_exit(ctx->ret, NR_creat, NULL);
}

SEC("tracepoint/syscalls/sys_exit_open_by_handle_at")
int stance_exit_open_by_handle_at(struct trace_event_raw_sys_exit *ctx)
{
	return on_open_exit(ctx->ret, NR_open_by_handle_at, NULL);
}

/* The same opens where fexit programs load: each runs only for its own syscall. */

SEC("fexit/__x64_sys_open")
int BPF_PROG(stance_fx_open, const struct pt_regs *regs, long ret)
{
	return on_open_exit(ret, NR_open, regs);
}

SEC("fexit/__x64_sys_openat")
int BPF_PROG(stance_fx_openat, const struct pt_regs *regs, long ret)
{
	return on_open_exit(ret, NR_openat, regs);
}

SEC("fexit/__x64_sys_openat2")
int BPF_PROG(stance_fx_openat2, const struct pt_regs *regs, long ret)
{
	return on_open_exit(ret, NR_openat2, regs);
}

SEC("fexit/__x64_sys_creat")
int BPF_PROG(stance_fx_creat, const struct pt_regs *regs, long ret)
{
	return on_open_exit(ret, NR_creat, regs);
}

SEC("fexit/__x64_sys_open_by_handle_at")
int BPF_PROG(stance_fx_open_by_handle_at, const struct pt_regs *regs, long ret)
{
	return on_open_exit(ret, NR_open_by_handle_at, regs);
}

/*
 * Where fexit loads, every path open of a process reaches the kernel's do_filp_open: open, openat,
 * openat2 and creat, their 32-bit variants, and io_uring's OPENAT/OPENAT2 (run by the process's own
 * io-wq workers), which no syscall hook sees. Its arguments and result are kernel objects, read by
 * plain loads: the flags as the kernel built them (O_* with the access mode, O_CREAT, O_TRUNC,
 * O_PATH kept), the opened file, or, for a failed open, the kernel's copy of the name. Opens the
 * kernel makes to exec a binary (__FMODE_EXEC) are the exec family's; kernel threads are skipped.
 * open_by_handle_at does not come here (stance_fx_open_by_handle_at covers it).
 */
#define __FMODE_EXEC 0x20
#define MAX_ERRNO 4095
#define EAGAIN 11
#define LOOKUP_CACHED 0x200000

SEC("fexit/do_filp_open")
int BPF_PROG(stance_fx_filp_open, int dfd, struct filename *pathname, const struct open_flags *op,
	     struct file *ret)
{
	/* The daemon's and kernel threads' opens are refused by the dedup check (unobserved()). */
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 open_flag = op->open_flag;
	if (open_flag & __FMODE_EXEC)
		return 0;
	__u64 cgroup_id = task_cgroup_id(task);

	struct open_seen o = { .dirfd = dfd, .flags = open_flag, .have_args = 1, .nr = STANCE_SYSCALL_UNKNOWN };
	/* A failed open returns ERR_PTR(-errno): the errno is read as a number (CTX_NUM). */
	if ((unsigned long)ret >= (unsigned long)-MAX_ERRNO) {
		long err = (long)CTX_NUM(3);
		/* io_uring first tries a lookup from the dentry cache only, without blocking; its
		 * EAGAIN is not the open's outcome: the retry that follows is. */
		if (err == -EAGAIN && (op->lookup_flags & LOOKUP_CACHED))
			return 0;
		o.ret = err;
		o.name = pathname->name;
	} else if (ret) {
		o.f = ret;
		/* With the flags known, the mode is only needed in a record: a repeat does not read it. */
		o.fmode_later = 1;
		struct inode *inode = ret->f_inode;
		if (inode) {
			o.ino = inode->i_ino;
			/* The filesystem's identity in the dedup key: its device number (a pointer would
			 * stay a pointer to the verifier, and the key is hashed). */
			o.sb = inode->i_sb->s_dev;
		}
	} else {
		return 0;
	}
	return emit_open(task, cgroup_id, &o);
}

/* ---- name changes: unlink, rename, link, truncate by path, mknod --------------------------------- */

/*
 * Enforcement decides these as writes to every name they remove, replace or create (enforce.bpf.c,
 * "names"): a file's content can be replaced or destroyed without opening it. If observation did
 * not learn them, a workload that saves by writing a temporary file and renaming it over the one it
 * reads (a database's snapshot, an editor, a package manager) would be denied that rename in
 * enforce. Each name is recorded as an open record with write access and its operation
 * (STANCE_OP_*), so the recommender's write rules cover it like any other write; the new name of a
 * rename or link is not counted as a created file (its name is the fixed one), an mknod's is.
 *
 * Where fexit loads, the kernel's security_path_* functions are hooked: every such syscall and
 * io_uring's UNLINKAT/RENAMEAT/LINKAT/MKNODAT reach them with the resolved dentries, the same place
 * enforcement's lsm/path_* programs decide (so the two see exactly the same names), before the
 * change is made. Elsewhere the syscall exit tracepoints record the caller's strings with the
 * directory they are relative to, as for a failed open (STANCE_F_UNRESOLVED).
 */
#define AT_REMOVEDIR 0x200

#define NR_rename 82
#define NR_link 86
#define NR_unlink 87
#define NR_mknod 133
#define NR_truncate 76
#define NR_renameat 264
#define NR_linkat 265
#define NR_unlinkat 263
#define NR_mknodat 259
#define NR_renameat2 316

#define NAME_WRITE STANCE_ACC_WRITE
#define NAME_TRUNC (STANCE_ACC_WRITE | STANCE_ACC_TRUNC)
#define NAME_CREATE (STANCE_ACC_WRITE | STANCE_ACC_CREATE)

/* Only regular files and FIFOs are decided by enforcement's path_mknod (mode 0 is a regular file). */
static __always_inline int mknod_observed(__u32 mode)
{
	__u32 type = mode & S_IFMT;
	return type == 0 || type == S_IFREG || type == S_IFIFO;
}

/* One name a syscall changed, as the caller gave it (tracepoint path). */
static __always_inline int emit_name_str(struct task_struct *task, __u64 cgroup_id, long nr, long ret,
					 long dirfd, __u64 name, __u32 op, __u32 access)
{
	struct open_seen o = { .dirfd = dirfd, .name = (const char *)name, .name_is_user = 1, .have_args = 1,
			       .nr = nr, .ret = ret < 0 ? ret : 0, .op = op, .name_access = access };
	return emit_open(task, cgroup_id, &o);
}

static __always_inline int on_name_exit(long ret, long nr)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 cgroup_id = task_cgroup_id(task);
	__u64 a[6] = {};
	if (syscall_args(task, nr, a) < 0) {
		/* The names cannot be read: say so rather than miss them quietly. */
		if (!unobserved(task))
			count_loss(cgroup_id, STANCE_LOSS_READ);
		return 0;
	}
	switch (nr) {
	case NR_unlink:
		return emit_name_str(task, cgroup_id, nr, ret, AT_FDCWD, a[0], STANCE_OP_UNLINK, NAME_WRITE);
	case NR_unlinkat:
		/* rmdir is not decided by enforcement. */
		if (a[2] & AT_REMOVEDIR)
			return 0;
		return emit_name_str(task, cgroup_id, nr, ret, (int)a[0], a[1], STANCE_OP_UNLINK, NAME_WRITE);
	case NR_rename:
		emit_name_str(task, cgroup_id, nr, ret, AT_FDCWD, a[0], STANCE_OP_RENAME_FROM, NAME_WRITE);
		return emit_name_str(task, cgroup_id, nr, ret, AT_FDCWD, a[1], STANCE_OP_RENAME_TO, NAME_WRITE);
	case NR_renameat:
	case NR_renameat2:
		emit_name_str(task, cgroup_id, nr, ret, (int)a[0], a[1], STANCE_OP_RENAME_FROM, NAME_WRITE);
		return emit_name_str(task, cgroup_id, nr, ret, (int)a[2], a[3], STANCE_OP_RENAME_TO, NAME_WRITE);
	case NR_link:
		emit_name_str(task, cgroup_id, nr, ret, AT_FDCWD, a[0], STANCE_OP_LINK_FROM, NAME_WRITE);
		return emit_name_str(task, cgroup_id, nr, ret, AT_FDCWD, a[1], STANCE_OP_LINK_TO, NAME_WRITE);
	case NR_linkat:
		emit_name_str(task, cgroup_id, nr, ret, (int)a[0], a[1], STANCE_OP_LINK_FROM, NAME_WRITE);
		return emit_name_str(task, cgroup_id, nr, ret, (int)a[2], a[3], STANCE_OP_LINK_TO, NAME_WRITE);
	case NR_truncate:
		return emit_name_str(task, cgroup_id, nr, ret, AT_FDCWD, a[0], STANCE_OP_TRUNCATE, NAME_TRUNC);
	case NR_mknod:
		if (!mknod_observed(a[1]))
			return 0;
		return emit_name_str(task, cgroup_id, nr, ret, AT_FDCWD, a[0], STANCE_OP_MKNOD, NAME_CREATE);
	case NR_mknodat:
		if (!mknod_observed(a[2]))
			return 0;
		return emit_name_str(task, cgroup_id, nr, ret, (int)a[0], a[1], STANCE_OP_MKNOD, NAME_CREATE);
	}
	return 0;
}

#define NAME_TP(sys)                                                     \
	SEC("tracepoint/syscalls/sys_exit_" #sys)                        \
	int stance_exit_##sys(struct trace_event_raw_sys_exit *ctx)      \
	{                                                                \
		return on_name_exit(ctx->ret, NR_##sys);                 \
	}

NAME_TP(unlink)
NAME_TP(unlinkat)
NAME_TP(rename)
NAME_TP(renameat)
NAME_TP(renameat2)
NAME_TP(link)
NAME_TP(linkat)
NAME_TP(truncate)
NAME_TP(mknod)
NAME_TP(mknodat)

/*
 * One name as the kernel resolved it (fexit path). Its dedup key is the name in its directory
 * (the name's hash and the directory's inode), not the inode it names: a rename over a file
 * replaces that inode every time, and a name being created has none yet.
 */
static __noinline int emit_name(struct dentry *dentry, struct vfsmount *mnt, __u32 op, __u32 access, long ret)
{
	struct task_struct *task = bpf_get_current_task_btf();
	if (!dentry || !mnt)
		return 0;
	__u64 cgroup_id = task_cgroup_id(task);
	__u32 zero = 0;
	struct ustr_buf *us = bpf_map_lookup_elem(&ustr_scratch, &zero);
	if (!us)
		return 0;
	long n = bpf_probe_read_kernel_str(us->buf, 256, BPF_CORE_READ(dentry, d_name.name));
	if (n <= 1)
		return 0;
	__u32 dev = BPF_CORE_READ(dentry, d_sb, s_dev);
	ret = ret < 0 ? ret : 0;

	struct stance_dedup_key k = { .cgroup_id = cgroup_id };
	current_exe_id(task, &k.exe_ino, &k.exe_dev);
	k.obj_a = hash_bytes(us->buf, n - 1) ^ ((__u64)dev << 32);
	k.obj_b = BPF_CORE_READ(dentry, d_parent, d_inode, i_ino) ^ ((__u64)(__u32)-ret << 48);
	k.kind_bits = (STANCE_EV_OPEN << 16) | (op << 8) | access;

	struct builder b;
	struct out_buf *out = begin_keyed(STANCE_EV_OPEN, cgroup_id, task, &k, ret, &b);
	if (!out)
		return 0;
	struct stance_open_body *body = (void *)out->body;
	struct inode *inode = BPF_CORE_READ(dentry, d_inode);
	body->ino = inode ? BPF_CORE_READ(inode, i_ino) : 0;
	body->dev = dev;
	body->access = access;
	body->syscall_nr = STANCE_SYSCALL_UNKNOWN;
	body->op = op;
	out->hdr.flags |= put_path(&b, STANCE_STR_OBJECT, dentry, mnt, task, STANCE_F_PATH_TRUNC);
	if (submit(&b, cgroup_id))
		dedup_forget(&k);
	return 0;
}

/* A unix socket's own name is the network domain's, which enforcement's path_unlink leaves alone
 * (a server removing its stale socket before bind): not a file write to learn. */
SEC("fexit/security_path_unlink")
int BPF_PROG(stance_fx_path_unlink, const struct path *dir, struct dentry *dentry, int ret)
{
	if (dentry_type(dentry) == S_IFSOCK)
		return 0;
	return emit_name(dentry, BPF_CORE_READ(dir, mnt), STANCE_OP_UNLINK, NAME_WRITE, ret);
}

/* The names enforcement's path_rename decides: the old one unless it is a socket, the new one
 * unless it is (or becomes) one. */
SEC("fexit/security_path_rename")
int BPF_PROG(stance_fx_path_rename, const struct path *old_dir, struct dentry *old_dentry, const struct path *new_dir,
	     struct dentry *new_dentry, unsigned int flags, int ret)
{
	int old_socket = dentry_type(old_dentry) == S_IFSOCK;
	__u32 new_type = dentry_type(new_dentry);
	if (!old_socket)
		emit_name(old_dentry, BPF_CORE_READ(old_dir, mnt), STANCE_OP_RENAME_FROM, NAME_WRITE, ret);
	if (new_type == S_IFSOCK || (new_type == 0 && old_socket))
		return 0;
	return emit_name(new_dentry, BPF_CORE_READ(new_dir, mnt), STANCE_OP_RENAME_TO, NAME_WRITE, ret);
}

SEC("fexit/security_path_link")
int BPF_PROG(stance_fx_path_link, struct dentry *old_dentry, const struct path *new_dir, struct dentry *new_dentry,
	     int ret)
{
	/* link(2) never crosses mounts: the old name is on the new one's. */
	struct vfsmount *mnt = BPF_CORE_READ(new_dir, mnt);
	emit_name(old_dentry, mnt, STANCE_OP_LINK_FROM, NAME_WRITE, ret);
	return emit_name(new_dentry, mnt, STANCE_OP_LINK_TO, NAME_WRITE, ret);
}

#define NR_ftruncate 77

/* The syscall the current task is in (x86_64 numbers), or -1. */
static __always_inline long current_syscall_nr(void)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	return regs ? (long)regs->orig_ax : -1;
}

/* Whether the current task is in an open syscall (or, with ftruncate, ftruncate(2)): then a path
 * hook below runs for what the open's own record already says. io_uring's opens run elsewhere and
 * are recorded twice, which only adds a count. */
static __always_inline int in_open_syscall(int or_ftruncate)
{
	long nr = current_syscall_nr();
	return nr == NR_open || nr == NR_openat || nr == NR_openat2 || nr == NR_creat ||
	       (or_ftruncate && nr == NR_ftruncate);
}

/* truncate(2) by path. Kernels before 6.2 pass this hook for open(O_TRUNC) and ftruncate(2) too,
 * on a file the open itself records as written (O_TRUNC, or the write mode ftruncate needs): those
 * are left to the open, so that its edge's count stays one per open. */
SEC("fexit/security_path_truncate")
int BPF_PROG(stance_fx_path_truncate, const struct path *path, int ret)
{
	if (in_open_syscall(1))
		return 0;
	return emit_name(BPF_CORE_READ(path, dentry), BPF_CORE_READ(path, mnt), STANCE_OP_TRUNCATE, NAME_TRUNC, ret);
}

/* An open(O_CREAT) of a new name passes this hook too, as a regular file: that create is the open's
 * record (do_filp_open), so a regular file is recorded here only when the syscall is not an open. */
SEC("fexit/security_path_mknod")
int BPF_PROG(stance_fx_path_mknod, const struct path *dir, struct dentry *dentry, umode_t mode, unsigned int dev,
	     int ret)
{
	if (!mknod_observed(mode))
		return 0;
	if ((mode & S_IFMT) != S_IFIFO && in_open_syscall(0))
		return 0;
	return emit_name(dentry, BPF_CORE_READ(dir, mnt), STANCE_OP_MKNOD, NAME_CREATE, ret);
}

/* ---- connect and datagram sends --------------------------------------------------------------- */

/* Bytes of a destination address the network programs read: up to the end of sockaddr_in6's address. */
#define SOCKADDR_HEAD 28

struct user_msghdr_min {
	void *msg_name;
	int msg_namelen;
};

/*
 * A 32-bit process's sendmsg and sendmmsg reach the kernel's __sys_sendmsg and __sys_sendmmsg with
 * MSG_CMSG_COMPAT added to the flags and forbid_cmsg_compat false, and messages in the compat
 * layout: a compat_msghdr starts with the name's 32-bit address and its length, and a
 * compat_mmsghdr is 32 bytes. (A 64-bit caller that sets MSG_CMSG_COMPAT itself comes with
 * forbid_cmsg_compat true, and is refused with EINVAL: its messages are in the 64-bit layout.)
 */
#define MSG_CMSG_COMPAT 0x80000000U
#define COMPAT_MMSGHDR_SIZE 32

static __always_inline int compat_call(__u32 flags, bool forbid_cmsg_compat)
{
	return (flags & MSG_CMSG_COMPAT) && !forbid_cmsg_compat;
}

/* The destination a user msghdr names (address and length), in either layout. */
static __always_inline int msghdr_dest(const void *umsg, int compat, __u64 *addr, __u32 *addrlen)
{
	if (compat) {
		__u32 c[2] = {};
		if (bpf_probe_read_user(c, sizeof(c), umsg))
			return -1;
		*addr = c[0];
		*addrlen = c[1];
		return 0;
	}
	struct user_msghdr_min m = {};
	if (bpf_probe_read_user(&m, sizeof(m), umsg))
		return -1;
	*addr = (__u64)m.msg_name;
	*addrlen = m.msg_namelen;
	return 0;
}

/* A destination as a hook saw it, before the dedup check and the record. */
struct net_seen {
	__u32 kind;
	/* The socket's file, when the hook has it; else the descriptor to look up. */
	struct file *sf;
	long fd;
	/* The address the caller gave: a user pointer at the syscall hooks, the kernel's copy (as a
	 * number, so that it can be offset) at __sys_connect_file. */
	const void *addr;
	int addr_is_user;
	__u32 addrlen;
	/* 0, or -errno. */
	long ret;
	/* The send's flags (MSG_*). */
	__u32 msg_flags;
	/* An fexit hook: security_unix_may_send is hooked too, and records the unix datagrams it let
	 * through by their peer (see stance_fx_unix_may_send). */
	int peer_hooked;
};

static __always_inline long read_addr(void *dst, __u32 len, const void *src, int user)
{
	return user ? bpf_probe_read_user(dst, len, src) : bpf_probe_read_kernel(dst, len, src);
}

static __always_inline int emit_net(struct task_struct *task, __u64 cgroup_id, const struct net_seen *seen);

/* A network syscall's exit: its arguments from the saved registers, the socket from the fd table. */
static __always_inline int on_net_exit(long ret, long nr, const struct pt_regs *regs)
{
	/* The daemon's own calls are refused by the dedup check (unobserved()). */
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 cgroup_id = task_cgroup_id(task);
	__u64 args[6] = {};
	if (user_args(task, regs, nr, args) < 0)
		return 0;

	struct net_seen seen = { .kind = STANCE_EV_CONNECT, .fd = (int)args[0], .addr_is_user = 1,
				 .ret = ret < 0 ? ret : 0, .peer_hooked = regs != NULL };
	switch (nr) {
	case NR_connect:
		seen.addr = (void *)args[1];
		seen.addrlen = (__u32)args[2];
		break;
	case NR_sendto:
		seen.kind = STANCE_EV_SEND;
		seen.addr = (void *)args[4];
		seen.addrlen = (__u32)args[5];
		seen.msg_flags = (__u32)args[3];
		break;
	case NR_sendmsg: {
		__u64 addr = 0;
		seen.kind = STANCE_EV_SEND;
		seen.msg_flags = (__u32)args[2];
		if (msghdr_dest((void *)args[1], 0, &addr, &seen.addrlen))
			return 0;
		seen.addr = (const void *)addr;
		break;
	}
	}
	return emit_net(task, cgroup_id, &seen);
}

/*
 * sendmmsg: every message names its own destination, and enforcement decides each one (in
 * socket_sendmsg and cgroup/sendmsg*), so each message that went out is recorded, not only the
 * first (a UDP server answering many clients in one call). The call returns how many messages were
 * sent; an error only when the first failed, and that one is recorded with it. An error after the
 * first is not returned, so a message that failed after others is not seen.
 *
 * The record code runs from a bpf_loop callback through emit_net_global(), a global function: the
 * verifier checks a global function once, on its own, and at a call only its argument. Inlined in
 * the callback, the record code was refused by 6.1's verifier and took 6.12's minutes to explore.
 */
#define UIO_MAXIOV 1024
/* struct mmsghdr: a struct user_msghdr (56 bytes on 64-bit) and the sent length, padded. */
#define MMSGHDR_SIZE 64

/* The global function's view of a destination: the net_seen fields it needs, all scalars (a global
 * function's argument is plain memory, so its pointers would be numbers anyway). */
struct net_msg {
	__u64 addr;
	__u32 addrlen;
	__u32 msg_flags;
	long fd;
	long ret;
	int peer_hooked;
};

__noinline int emit_net_global(const struct net_msg *m)
{
	if (!m)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	struct net_seen seen = { .kind = STANCE_EV_SEND, .fd = m->fd, .addr = (const void *)m->addr,
				 .addr_is_user = 1, .addrlen = m->addrlen, .ret = m->ret,
				 .msg_flags = m->msg_flags, .peer_hooked = m->peer_hooked };
	return emit_net(task, task_cgroup_id(task), &seen);
}

struct mmsg_loop {
	/* The user's struct mmsghdr (or compat_mmsghdr) array. */
	__u64 vec;
	int compat;
	struct net_msg msg;
};

static long mmsg_step(__u32 i, void *ctx)
{
	struct mmsg_loop *l = ctx;
	__u64 stride = l->compat ? COMPAT_MMSGHDR_SIZE : MMSGHDR_SIZE;
	if (msghdr_dest((void *)(l->vec + i * stride), l->compat, &l->msg.addr, &l->msg.addrlen))
		return 1;
	emit_net_global(&l->msg);
	return 0;
}

/* A sendmmsg that returned ret: its arguments as the hook found them. */
static __always_inline int on_sendmmsg(long ret, long fd, __u64 vec, __u32 vlen, __u32 flags, int compat,
				       int peer_hooked)
{
	if (vlen > UIO_MAXIOV)
		vlen = UIO_MAXIOV;
	struct mmsg_loop l = { .vec = vec,
			       .compat = compat,
			       .msg = { .fd = fd, .msg_flags = flags, .peer_hooked = peer_hooked } };
	__u32 n = vlen;
	if (ret < 0) {
		l.msg.ret = ret;
		n = vlen ? 1 : 0;
	} else if (ret < vlen) {
		n = ret;
	}
	bpf_loop(n, mmsg_step, &l, 0);
	return 0;
}

static __always_inline int on_sendmmsg_exit(long ret, const struct pt_regs *regs)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 args[6] = {};
	if (user_args(task, regs, NR_sendmmsg, args) < 0)
		return 0;
	return on_sendmmsg(ret, (int)args[0], args[1], (__u32)args[2], (__u32)args[3], 0, regs != NULL);
}

/* Dedup check and record of a connect or datagram send, however it was hooked. */
static __always_inline int emit_net(struct task_struct *task, __u64 cgroup_id, const struct net_seen *seen)
{
	const void *uaddr = seen->addr;
	__u32 addrlen = seen->addrlen;
	__u32 kind = seen->kind;
	long ret = seen->ret;
	int user = seen->addr_is_user;
	if (!uaddr || addrlen < 2)
		return 0;

	/*
	 * The address's head in one read: family, port and an IPv4 or IPv6 address (sockaddr_in6 is
	 * 28 bytes), no more than the caller said it passed. The kernel copied the same addrlen bytes,
	 * so this read fails only where the call itself failed with EFAULT, and then there is no
	 * destination to report.
	 */
	__u8 sa[SOCKADDR_HEAD] = {};
	__u32 n = addrlen < SOCKADDR_HEAD ? addrlen : SOCKADDR_HEAD;
	if (read_addr(sa, BOUND(n, 31), uaddr, user))
		return 0;
	__u16 family = *(__u16 *)sa;
	if (family != AF_INET && family != AF_INET6 && family != AF_UNIX)
		return 0;
	/* A unix datagram that was sent passed security_unix_may_send, whose program records it by
	 * its peer where it is attached. */
	if (family == AF_UNIX && kind == STANCE_EV_SEND && ret == 0 && seen->peer_hooked)
		return 0;

	/* The socket's type is part of the key; its protocol is only read for a record. */
	__u16 sock_type = 0;
	struct socket *sock = NULL;
	struct file *sf = seen->sf;
	if (!sf)
		sf = fd_file(task, seen->fd);
	if (sf) {
		sock = BPF_CORE_READ(sf, private_data);
		if (sock)
			sock_type = BPF_CORE_READ(sock, type);
	}
	/* A destination on a stream or seqpacket socket's send is ignored by the kernel; connect
	 * covers it. Except TCP Fast Open: a send with MSG_FASTOPEN connects to it, past the kernel's
	 * connect path (and enforcement decides it at socket_sendmsg): it is that connect. */
	if (kind == STANCE_EV_SEND && sock_type == SOCK_STREAM && (seen->msg_flags & MSG_FASTOPEN) && family != AF_UNIX)
		kind = STANCE_EV_CONNECT;
	if (kind == STANCE_EV_SEND && (sock_type == SOCK_STREAM || sock_type == SOCK_SEQPACKET))
		return 0;

	struct stance_net_body nb = { .family = family, .sock_type = sock_type };
	__u32 zero = 0;
	struct ustr_buf *us = NULL;
	__u32 ulen = 0;
	int abstract = 0;
	struct stance_dedup_key k = { .cgroup_id = cgroup_id };
	if (family == AF_INET) {
		nb.port = bpf_ntohs(*(__u16 *)(sa + 2));
		__builtin_memcpy(nb.addr, sa + 4, 4);
	} else if (family == AF_INET6) {
		nb.port = bpf_ntohs(*(__u16 *)(sa + 2));
		__builtin_memcpy(nb.addr, sa + 8, 16);
	} else {
		us = bpf_map_lookup_elem(&ustr_scratch, &zero);
		if (!us)
			return 0;
		__u32 plen = addrlen - 2;
		if (plen > STANCE_UNIX_PATH_MAX)
			plen = STANCE_UNIX_PATH_MAX;
		if (sa[2] == 0) {
			/* Abstract name: the bytes after the leading NUL, exactly addrlen long (sa[2] is
			 * 0 too when there is no name at all, which the kernel refuses with EINVAL). */
			abstract = 1;
			ulen = plen > 0 ? plen - 1 : 0;
			if (ulen && read_addr(us->buf, BOUND(ulen, 127), uaddr + 3, user))
				return 0;
		} else {
			/* Filesystem path: up to its NUL, within the address length. */
			long n = user ? bpf_probe_read_user_str(us->buf, BOUND(plen + 1, 127), uaddr + 2)
				      : bpf_probe_read_kernel_str(us->buf, BOUND(plen + 1, 127), uaddr + 2);
			if (n <= 1)
				return 0;
			ulen = n - 1;
		}
		k.obj_a = hash_bytes(us->buf, ulen);
	}
	if (family != AF_UNIX) {
		__builtin_memcpy(&k.obj_a, nb.addr, 8);
		__builtin_memcpy(&k.obj_b, nb.addr + 8, 8);
		k.obj_b ^= (__u64)nb.port << 48;
	}
	k.kind_bits = (kind << 24) | ((sock_type & 0xff) << 16) | ((__u32)-ret & 0xffff);
	current_exe_id(task, &k.exe_ino, &k.exe_dev);

	struct builder b;
	struct out_buf *out = begin_keyed(kind, cgroup_id, task, &k, ret, &b);
	if (!out)
		return 0;
	if (sock)
		nb.protocol = BPF_CORE_READ(sock, sk, sk_protocol);
	__builtin_memcpy(out->body, &nb, sizeof(nb));
	/*
	 * A unix connect that succeeded reached a peer bound to a path: that path, walked from the
	 * peer's dentry, is what enforcement's unix hooks match, while the caller's name may be a
	 * symlink to it (/dev/log, anything under /var/run) or relative to a symlinked directory. The
	 * connected socket's peer is the listener's new socket (stream), which carries the listener's
	 * path, or the bound socket itself (datagram). A send names its destination only for itself,
	 * and a failed connect has no peer: those keep the caller's name.
	 */
	struct dentry *peer_dentry = NULL;
	struct unix_sock *peer = NULL;
	if (family == AF_UNIX && !abstract && kind == STANCE_EV_CONNECT && ret == 0 && sock) {
		struct unix_sock *self = (struct unix_sock *)BPF_CORE_READ(sock, sk);
		peer = (struct unix_sock *)BPF_CORE_READ(self, peer);
		if (peer)
			peer_dentry = BPF_CORE_READ(peer, path.dentry);
	}
	if (peer_dentry) {
		out->hdr.flags |= put_path(&b, STANCE_STR_OBJECT, peer_dentry, BPF_CORE_READ(peer, path.mnt), task,
					   STANCE_F_PATH_TRUNC);
	} else if (family == AF_UNIX && us) {
		out->hdr.flags |= STANCE_F_UNRESOLVED | (abstract ? STANCE_F_ABSTRACT : 0);
		put_bytes(&b, STANCE_STR_OBJECT, us->buf, ulen, 0);
		if (!abstract && ulen > 0 && us->buf[0] != '/')
			put_base_dir(&b, task, AT_FDCWD);
	}
	if (submit(&b, cgroup_id))
		dedup_forget(&k);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int stance_exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	return on_net_exit(ctx->ret, NR_connect, NULL);
}

SEC("tracepoint/syscalls/sys_exit_sendto")
int stance_exit_sendto(struct trace_event_raw_sys_exit *ctx)
{
	return on_net_exit(ctx->ret, NR_sendto, NULL);
}

SEC("tracepoint/syscalls/sys_exit_sendmsg")
int stance_exit_sendmsg(struct trace_event_raw_sys_exit *ctx)
{
	return on_net_exit(ctx->ret, NR_sendmsg, NULL);
}

SEC("tracepoint/syscalls/sys_exit_sendmmsg")
int stance_exit_sendmmsg(struct trace_event_raw_sys_exit *ctx)
{
	return on_sendmmsg_exit(ctx->ret, NULL);
}

/* The same calls where fexit programs load. */

SEC("fexit/__x64_sys_connect")
int BPF_PROG(stance_fx_connect, const struct pt_regs *regs, long ret)
{
	return on_net_exit(ret, NR_connect, regs);
}

/*
 * Where fexit loads, every connect reaches __sys_connect_file with the kernel's copy of the address
 * and the socket's file: connect(2), its 32-bit variant, and io_uring's CONNECT (which no syscall
 * hook sees). A non-blocking connect returns EINPROGRESS here, as the syscall does; io_uring then
 * waits for the socket and calls it again, which returns EISCONN once connected.
 */
SEC("fexit/__sys_connect_file")
int BPF_PROG(stance_fx_connect_file, struct file *file, void *address, int addrlen, int file_flags,
	     int ret)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct net_seen seen = { .kind = STANCE_EV_CONNECT, .sf = file, .fd = -1, .addr = (const void *)CTX_NUM(1),
				 .addr_is_user = 0, .addrlen = addrlen, .ret = ret < 0 ? ret : 0 };
	return emit_net(task, task_cgroup_id(task), &seen);
}

/*
 * io_uring's SENDMSG, and SEND with a destination, reach the socket layer directly (sock_sendmsg,
 * __sys_sendmsg_sock: every send of every socket, far too hot to hook), so no syscall hook sees
 * them. Their issue functions do, once per request. Where a kernel's io_uring lays these out
 * differently, CO-RE fails the program's load, and the loader falls back to the syscall hooks and
 * says why. The request's command data (its first member, as io_kiocb_to_cmd() takes it) holds what
 * the caller gave: the user's msghdr for SENDMSG, the destination's user address and length for
 * SEND. Local flavors of the kernel's types, so the object builds from any kernel's vmlinux.h.
 */
struct io_cqe___stance {
	__s32 res;
} __attribute__((preserve_access_index));

struct io_kiocb___stance {
	struct file *file;
	struct io_cqe___stance cqe;
} __attribute__((preserve_access_index));

struct io_sr_msg___stance {
	struct user_msghdr *umsg;
	void *addr;
	__u16 addr_len;
} __attribute__((preserve_access_index));

/*
 * The outcome: the function returns 0 once it has put the send's result (bytes or -errno) in the
 * request's completion, or an error of its own; -EAGAIN means the request was deferred, and its
 * retry is the one that reports. A 32-bit process's msghdr has another layout: its destination
 * does not parse as an address, and is not recorded (as at the 64-bit syscall hooks).
 */
static __always_inline int on_uring_send(void *req_ptr, int sendmsg, int ret)
{
	if (ret == -EAGAIN)
		return 0;
	struct io_kiocb___stance *req = req_ptr;
	struct io_sr_msg___stance *sr = req_ptr;
	struct task_struct *task = bpf_get_current_task_btf();
	struct net_seen seen = { .kind = STANCE_EV_SEND, .sf = BPF_CORE_READ(req, file), .fd = -1, .addr_is_user = 1,
				 .peer_hooked = 1 };
	if (sendmsg) {
		__u64 addr = 0;
		if (msghdr_dest(BPF_CORE_READ(sr, umsg), 0, &addr, &seen.addrlen))
			return 0;
		seen.addr = (const void *)addr;
	} else {
		seen.addr = BPF_CORE_READ(sr, addr);
		seen.addrlen = BPF_CORE_READ(sr, addr_len);
	}
	long res = ret ? ret : BPF_CORE_READ(req, cqe.res);
	seen.ret = res < 0 ? res : 0;
	return emit_net(task, task_cgroup_id(task), &seen);
}

SEC("fexit/io_sendmsg")
int BPF_PROG(stance_fx_io_sendmsg, void *req, unsigned int issue_flags, int ret)
{
	return on_uring_send(req, 1, ret);
}

SEC("fexit/io_send")
int BPF_PROG(stance_fx_io_send, void *req, unsigned int issue_flags, int ret)
{
	return on_uring_send(req, 0, ret);
}

SEC("fexit/__x64_sys_sendto")
int BPF_PROG(stance_fx_sendto, const struct pt_regs *regs, long ret)
{
	return on_net_exit(ret, NR_sendto, regs);
}

SEC("fexit/__x64_sys_sendmsg")
int BPF_PROG(stance_fx_sendmsg, const struct pt_regs *regs, long ret)
{
	return on_net_exit(ret, NR_sendmsg, regs);
}

SEC("fexit/__x64_sys_sendmmsg")
int BPF_PROG(stance_fx_sendmmsg, const struct pt_regs *regs, long ret)
{
	return on_sendmmsg_exit(ret, regs);
}

/*
 * Where they load, the kernel functions the send syscalls share: the 64-bit syscalls, a 32-bit
 * process's (ia32 and compat, and socketcall's), which the __x64_sys_* programs above never see,
 * all call them with the caller's arguments. User addresses are read as numbers (CTX_NUM).
 */

SEC("fexit/__sys_sendto")
int BPF_PROG(stance_fx_sys_sendto, int fd, void *buff, size_t len, unsigned int flags, void *addr, int addr_len,
	     int ret)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct net_seen seen = { .kind = STANCE_EV_SEND, .fd = fd, .addr = (const void *)CTX_NUM(4), .addr_is_user = 1,
				 .addrlen = addr_len, .ret = ret < 0 ? ret : 0, .msg_flags = flags, .peer_hooked = 1 };
	return emit_net(task, task_cgroup_id(task), &seen);
}

SEC("fexit/__sys_sendmsg")
int BPF_PROG(stance_fx_sys_sendmsg, int fd, void *msg, unsigned int flags, bool forbid_cmsg_compat, long ret)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct net_seen seen = { .kind = STANCE_EV_SEND, .fd = fd, .addr_is_user = 1, .ret = ret < 0 ? ret : 0,
				 .msg_flags = flags, .peer_hooked = 1 };
	__u64 addr = 0;
	if (msghdr_dest((const void *)CTX_NUM(1), compat_call(flags, forbid_cmsg_compat), &addr, &seen.addrlen))
		return 0;
	seen.addr = (const void *)addr;
	return emit_net(task, task_cgroup_id(task), &seen);
}

SEC("fexit/__sys_sendmmsg")
int BPF_PROG(stance_fx_sys_sendmmsg, int fd, void *mmsg, unsigned int vlen, unsigned int flags,
	     bool forbid_cmsg_compat, int ret)
{
	return on_sendmmsg(ret, fd, CTX_NUM(1), vlen, flags, compat_call(flags, forbid_cmsg_compat), 1);
}

/*
 * Unix datagrams, by the peer the kernel found. Enforcement's unix_may_send matches the path the
 * receiving socket is bound to (or its abstract name). A send names its destination as the caller
 * wrote it, which may be a symlink to that path (/dev/log) or relative to a symlinked directory,
 * and a socket connected before observation started names none at all. security_unix_may_send
 * runs once the peer is known, for every datagram a unix datagram socket sends, connected or not
 * (and for io_uring's), so this program records each one it let through by the peer's bound path,
 * keyed by the socket file's inode so that a repeat costs no path walk. A send it refused, or one
 * that failed before it, is recorded at the syscall with the caller's name, as a failed connect
 * is. A datagram connect passes this hook too; the connect's own record covers it.
 */
SEC("fexit/security_unix_may_send")
int BPF_PROG(stance_fx_unix_may_send, struct socket *sock, struct socket *other, int ret)
{
	if (ret != 0)
		return 0;
	if (current_syscall_nr() == NR_connect)
		return 0;
	struct unix_sock *peer = (struct unix_sock *)BPF_CORE_READ(other, sk);
	if (!peer)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 cgroup_id = task_cgroup_id(task);
	struct dentry *dentry = BPF_CORE_READ(peer, path.dentry);
	struct ustr_buf *us = NULL;
	__u32 ulen = 0;
	struct stance_dedup_key k = { .cgroup_id = cgroup_id };
	if (dentry) {
		struct inode *inode = BPF_CORE_READ(dentry, d_inode);
		k.obj_a = BPF_CORE_READ(inode, i_ino);
		k.obj_b = BPF_CORE_READ(inode, i_sb, s_dev);
	} else {
		/* An abstract name (autobind's too); an unbound peer (a socketpair's) has none, and
		 * enforcement lets it through. */
		struct unix_address *addr = BPF_CORE_READ(peer, addr);
		if (!addr)
			return 0;
		__u32 zero = 0;
		us = bpf_map_lookup_elem(&ustr_scratch, &zero);
		if (!us)
			return 0;
		/* sun_family (2 bytes), the leading NUL, then the name. */
		int alen = BPF_CORE_READ(addr, len);
		ulen = alen > 3 ? alen - 3 : 0;
		if (ulen > STANCE_UNIX_PATH_MAX - 1)
			ulen = STANCE_UNIX_PATH_MAX - 1;
		void *name = (void *)addr + bpf_core_field_offset(struct unix_address, name) + 3;
		if (ulen && bpf_probe_read_kernel(us->buf, BOUND(ulen, 127), name))
			return 0;
		k.obj_a = hash_bytes(us->buf, ulen);
		k.obj_b = 1;
	}
	__u16 sock_type = BPF_CORE_READ(sock, type);
	k.kind_bits = (STANCE_EV_SEND << 24) | ((sock_type & 0xff) << 16);
	current_exe_id(task, &k.exe_ino, &k.exe_dev);
	struct builder b;
	struct out_buf *out = begin_keyed(STANCE_EV_SEND, cgroup_id, task, &k, 0, &b);
	if (!out)
		return 0;
	struct stance_net_body nb = { .family = AF_UNIX, .sock_type = sock_type };
	__builtin_memcpy(out->body, &nb, sizeof(nb));
	if (dentry) {
		out->hdr.flags |= put_path(&b, STANCE_STR_OBJECT, dentry, BPF_CORE_READ(peer, path.mnt), task,
					   STANCE_F_PATH_TRUNC);
	} else {
		out->hdr.flags |= STANCE_F_ABSTRACT;
		put_bytes(&b, STANCE_STR_OBJECT, us->buf, ulen, 0);
	}
	if (submit(&b, cgroup_id))
		dedup_forget(&k);
	return 0;
}

/* ---- process lifecycle ------------------------------------------------------------------------ */

SEC("tp_btf/sched_process_exec")
int BPF_PROG(stance_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if ((pid_tgid >> 32) == stance_tgid)
		return 0;
	__u64 cgroup_id = bpf_get_current_cgroup_id();
	struct task_struct *task = bpf_get_current_task_btf();
	struct builder b;
	struct out_buf *out = begin(STANCE_EV_EXEC, cgroup_id, task, &b);
	if (!out)
		return 0;
	struct stance_exec_body *body = (void *)out->body;
	struct file *f = BPF_CORE_READ(bprm, file);
	if (!f) {
		count_loss(cgroup_id, STANCE_LOSS_READ);
		return 0;
	}
	file_id(f, &body->ino, &body->dev);
	out->hdr.exe_ino = body->ino;
	out->hdr.exe_dev = body->dev;
	body->argc = BPF_CORE_READ(bprm, argc);
	out->hdr.flags |= put_path(&b, STANCE_STR_OBJECT, BPF_CORE_READ(f, f_path.dentry), BPF_CORE_READ(f, f_path.mnt),
				   task, STANCE_F_PATH_TRUNC);

	/* The parent: its executable, and whether it is inside this workload's cgroup. */
	struct task_struct *parent = BPF_CORE_READ(task, real_parent);
	if (parent) {
		__u64 pcg = BPF_CORE_READ(parent, cgroups, dfl_cgrp, kn, id);
		if (pcg != cgroup_id)
			out->hdr.flags |= STANCE_F_PARENT_OUTSIDE;
		struct file *pexe = task_exe_file(parent);
		if (pexe) {
			file_id(pexe, &body->parent_exe_ino, &body->parent_exe_dev);
			out->hdr.flags |= put_path(&b, STANCE_STR_AUX, BPF_CORE_READ(pexe, f_path.dentry),
						   BPF_CORE_READ(pexe, f_path.mnt), task, STANCE_F_AUX_TRUNC);
		}
	}

	/* argv from the new image's memory, bounded. */
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	if (mm) {
		unsigned long start = BPF_CORE_READ(mm, arg_start);
		unsigned long end = BPF_CORE_READ(mm, arg_end);
		__u32 max = argv_max > STANCE_ARGV_MAX ? STANCE_ARGV_MAX : argv_max;
		__u32 len = end > start ? end - start : 0;
		if (len > max) {
			len = max;
			out->hdr.flags |= STANCE_F_ARGV_TRUNC;
		}
		__u32 off = b.off;
		if (len && off <= 3 * STANCE_PATH_MAX) {
			bpf_probe_read_user(&out->data[BOUND(off, 16383)], BOUND(len, 2047),
					    (void *)start);
			out->hdr.len[STANCE_STR_ARGV] = len;
			b.off = off + len;
		}
	}
	submit(&b, cgroup_id);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(stance_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = BPF_CORE_READ(parent, tgid);
	__u32 ctgid = BPF_CORE_READ(child, tgid);
	/* A new thread is not a new process. */
	if (ptgid == ctgid || ptgid == stance_tgid)
		return 0;
	__u64 cgroup_id = bpf_get_current_cgroup_id();
	struct task_struct *task = bpf_get_current_task_btf();
	struct builder b;
	struct out_buf *out = begin(STANCE_EV_FORK, cgroup_id, task, &b);
	if (!out)
		return 0;
	struct stance_proc_body *body = (void *)out->body;
	body->child_pid = BPF_CORE_READ(child, pid);
	body->child_tgid = ctgid;
	/* The executable by identity only: its path is known from the exec or the startup scan, and a
	 * path walk on every fork would be paid by every shell loop. */
	current_exe_id(task, &out->hdr.exe_ino, &out->hdr.exe_dev);
	submit(&b, cgroup_id);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(stance_exit, struct task_struct *p)
{
	__u32 pid = BPF_CORE_READ(p, pid);
	__u32 tgid = BPF_CORE_READ(p, tgid);
	/* Only the thread-group leader's exit ends the process. */
	if (pid != tgid || tgid == stance_tgid)
		return 0;
	__u64 cgroup_id = bpf_get_current_cgroup_id();
	struct task_struct *task = bpf_get_current_task_btf();
	struct builder b;
	struct out_buf *out = begin(STANCE_EV_EXIT, cgroup_id, task, &b);
	if (!out)
		return 0;
	struct stance_proc_body *body = (void *)out->body;
	body->exit_code = BPF_CORE_READ(p, exit_code);
	out->hdr.ret = body->exit_code;
	/* No path walk at exit: the executable is already known from exec or the startup scan. */
	struct file *exe = task_exe_file(task);
	if (exe)
		file_id(exe, &out->hdr.exe_ino, &out->hdr.exe_dev);
	submit(&b, cgroup_id);
	return 0;
}

/* ---- cgroups: the kernel tells us id → path as cgroups appear, so identity never races ---------- */

static __always_inline int on_cgroup(struct cgroup *cgrp, const char *path, __u32 kind)
{
	int hierarchy = BPF_CORE_READ(cgrp, root, hierarchy_id);
	/* Only the unified (v2) hierarchy has the ids bpf_get_current_cgroup_id() returns. */
	if (hierarchy != 0)
		return 0;
	__u64 cgroup_id = bpf_get_current_cgroup_id();
	struct task_struct *task = bpf_get_current_task_btf();
	struct builder b;
	struct out_buf *out = begin(kind, cgroup_id, task, &b);
	if (!out)
		return 0;
	struct stance_cgroup_body *body = (void *)out->body;
	body->id = BPF_CORE_READ(cgrp, kn, id);
	body->hierarchy_id = hierarchy;
	body->level = BPF_CORE_READ(cgrp, level);
	long n = bpf_probe_read_kernel_str(out->data, STANCE_PATH_MAX, path);
	if (n > 1) {
		out->hdr.len[STANCE_STR_OBJECT] = n - 1;
		b.off = n - 1;
	}
	submit(&b, cgroup_id);
	return 0;
}

SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(stance_cgroup_mkdir, struct cgroup *cgrp, const char *path)
{
	return on_cgroup(cgrp, path, STANCE_EV_CGROUP_MKDIR);
}

SEC("tp_btf/cgroup_rmdir")
int BPF_PROG(stance_cgroup_rmdir, struct cgroup *cgrp, const char *path)
{
	return on_cgroup(cgrp, path, STANCE_EV_CGROUP_RMDIR);
}

/* ---- ptrace and /proc/PID access ------------------------------------------------------------------- */

/*
 * Enforcement decides every ptrace access check of a workload's process on another process
 * (ptrace_access_check: ptrace(2), and the PTRACE_MODE_READ checks behind /proc/PID/environ, fd,
 * maps, process_vm_readv, pidfd_getfd), allowing only targets in the same workload, and only if
 * the policy says so. Observation records each such check with the target's cgroup and the mode,
 * so the recommender can say so. The kernel skips the check, and this hook, for the caller's own
 * thread group.
 */
#define PTRACE_MODE_MASK 0x1f

static __always_inline int on_ptrace(struct task_struct *child, unsigned int mode, int ret)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 cgroup_id = task_cgroup_id(task);
	__u64 target_cg = BPF_CORE_READ(child, cgroups, dfl_cgrp, kn, id);
	ret = ret < 0 ? ret : 0;
	struct stance_dedup_key k = { .cgroup_id = cgroup_id, .obj_a = target_cg };
	k.kind_bits = (STANCE_EV_PTRACE << 16) | ((mode & PTRACE_MODE_MASK) << 8) | ((__u32)-ret & 0xff);
	current_exe_id(task, &k.exe_ino, &k.exe_dev);
	struct builder b;
	struct out_buf *out = begin_keyed(STANCE_EV_PTRACE, cgroup_id, task, &k, ret, &b);
	if (!out)
		return 0;
	struct stance_ptrace_body *body = (void *)out->body;
	body->target_cgroup_id = target_cg;
	body->target_tgid = BPF_CORE_READ(child, tgid);
	body->mode = mode;
	if (submit(&b, cgroup_id))
		dedup_forget(&k);
	return 0;
}

SEC("fexit/security_ptrace_access_check")
int BPF_PROG(stance_fx_ptrace, struct task_struct *child, unsigned int mode, int ret)
{
	return on_ptrace(child, mode, ret);
}

/* Where BPF-LSM runs but fexit does not: the checks the LSMs before this one allowed. */
SEC("lsm/ptrace_access_check")
int BPF_PROG(stance_lsm_ptrace, struct task_struct *child, unsigned int mode)
{
	on_ptrace(child, mode, 0);
	return 0;
}

/* ---- capabilities: only where the kernel lets such a program load ----------------------------- */

static __always_inline int on_capable(struct user_namespace *ns, int cap, unsigned int opts, int granted)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if ((pid_tgid >> 32) == stance_tgid)
		return 0;
	__u64 cgroup_id = bpf_get_current_cgroup_id();
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 userns = BPF_CORE_READ(ns, ns.inum);
	int level = BPF_CORE_READ(ns, level);
	struct stance_dedup_key k = { .cgroup_id = cgroup_id, .obj_a = cap, .obj_b = userns };
	k.kind_bits = (STANCE_EV_CAPABLE << 16) | (granted ? 1 : 0) | ((opts & 0xff) << 1);
	struct file *exe = task_exe_file(task);
	if (exe)
		file_id(exe, &k.exe_ino, &k.exe_dev);
	struct builder b;
	struct out_buf *out = begin_keyed(STANCE_EV_CAPABLE, cgroup_id, task, &k, 0, &b);
	if (!out)
		return 0;
	if (level > 0)
		out->hdr.flags |= STANCE_F_CHILD_USERNS;
	struct stance_cap_body *body = (void *)out->body;
	body->cap = cap;
	body->opts = opts;
	body->userns_inum = userns;
	body->granted = granted;
	if (submit(&b, cgroup_id))
		dedup_forget(&k);
	return 0;
}

/* Sees every check and its result, where fexit programs load. */
SEC("fexit/cap_capable")
int BPF_PROG(stance_cap_capable, const struct cred *cred, struct user_namespace *targ_ns, int cap, unsigned int opts,
	     int ret)
{
	on_capable(targ_ns, cap, opts, ret == 0);
	return 0;
}

/* The capability tracepoint (kernels 6.14 and later), for kernels that refuse fexit and BPF-LSM
 * programs but run tp_btf ones: every check and its result, like fexit. It does not carry the
 * check's options (CAP_OPT_NOAUDIT, CAP_OPT_INSETID), so those are reported as none. */
SEC("tp_btf/cap_capable")
int BPF_PROG(stance_tp_capable, const struct cred *cred, struct user_namespace *targ_ns,
	     const struct user_namespace *capable_ns, int cap, int ret)
{
	on_capable(targ_ns, cap, 0, ret == 0);
	return 0;
}

/* Sees the checks that the capability LSM granted (LSMs after a denial are not called). */
SEC("lsm/capable")
int BPF_PROG(stance_lsm_capable, const struct cred *cred, struct user_namespace *ns, int cap, unsigned int opts)
{
	on_capable(ns, cap, opts, 1);
	return 0;
}
