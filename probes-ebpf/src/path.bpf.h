/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Path resolution shared by Stance's BPF programs (observe.bpf.c and enforce.bpf.c): a struct path
 * (dentry + vfsmount) is turned into the absolute path the acting task sees, by walking dentries up
 * and crossing mounts up to the task's root, in a per-CPU scratch buffer. Paths that do not fit or
 * are deeper than the walk are flagged (trunc), never silently cut; objects with no path in any mount
 * (memfd, pipes, sockets) are flagged anon and written as "/<name>".
 *
 * The enforcer's file lookups also ask for procfs components that are all digits (pids, tids) to be
 * written as "*" (walk_step_impl with norm set); observation always gets the real path.
 *
 * Include after vmlinux.h, the libbpf headers and stance_events.h.
 */
#ifndef STANCE_PATH_BPF_H
#define STANCE_PATH_BPF_H

/*
 * Clamp a size or offset with an AND that stays in the instruction stream. clang drops a mask it
 * can prove redundant, and some verifiers (6.12's, with linked scalar ids) lose the bound the
 * compiler relied on and then reject the helper call as unbounded.
 */
#define BOUND(v, mask)                                  \
	({                                              \
		__u64 __b = (v);                        \
		asm volatile("%0 &= " #mask : "+r"(__b)); \
		__b;                                    \
	})

/* procfs's s_magic (stance_enforce.h has the same; observe.bpf.c does not include that). */
#ifndef STANCE_PROC_SUPER_MAGIC
#define STANCE_PROC_SUPER_MAGIC 0x9fa0
#endif

/* Inode types (i_mode & S_IFMT), which vmlinux.h does not define. */
#define S_IFMT 00170000
#define S_IFDIR 0040000
#define S_IFREG 0100000
#define S_IFIFO 0010000
#define S_IFSOCK 0140000

/* The inode type of an existing name (0 for a name being created). */
static __always_inline __u32 dentry_type(struct dentry *dentry)
{
	struct inode *inode = BPF_CORE_READ(dentry, d_inode);
	return inode ? (BPF_CORE_READ(inode, i_mode) & S_IFMT) : 0;
}

#define WALK_BUF (STANCE_PATH_MAX + 256)
#define MAX_COMPONENTS 2048

struct walk_buf {
	char buf[WALK_BUF];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct walk_buf);
} walk_scratch SEC(".maps");

/* ---- path resolution ---------------------------------------------------------------------- */

struct walk_ctx {
	struct dentry *dentry;
	struct mount *mnt;
	struct dentry *mnt_root;
	struct dentry *root_dentry;
	struct vfsmount *root_mnt;
	struct walk_buf *wb;
	__u32 pos;
	__u32 done;
	__u32 trunc;
	__u32 anon;
	/* The mount being walked is procfs (kept by the normalising walk only). */
	__u32 on_proc;
};

/* The high bit of each byte of w that is not an ASCII digit, without a branch per byte (this runs
 * inside the walk's loop callback, which newer verifiers check until its states converge: every
 * branch there multiplies their work). Only bytes below 0x80 are added to, so no carry crosses
 * into a byte that was a digit. */
#define SWAR_HIGH 0x8080808080808080ULL
static __always_inline __u64 non_digits(__u64 w)
{
	__u64 high = w & SWAR_HIGH;
	__u64 ascii = w & ~SWAR_HIGH;
	/* b >= ':' sets the high bit of b + 0x46; b < '0' leaves it clear in b + 0x50. */
	return high | ((ascii + 0x4646464646464646ULL) & SWAR_HIGH) | (~(ascii + 0x5050505050505050ULL) & SWAR_HIGH);
}

/* 1 when the name is 1 to 10 ASCII digits (a pid or tid fits in 10). */
static __always_inline int all_digits(const unsigned char *name, __u32 len)
{
	if (len == 0 || len > 10)
		return 0;
	__u64 w[2] = {};
	bpf_probe_read_kernel(w, BOUND(len, 15), name);
	/* Bytes past the name are zero, which is not a digit: mask them out. */
	__u64 m0 = len >= 8 ? ~0ULL : (1ULL << (len * 8)) - 1;
	__u64 m1 = len > 8 ? (1ULL << ((len - 8) * 8)) - 1 : 0;
	return ((non_digits(w[0]) & m0) | (non_digits(w[1]) & m1)) == 0;
}

/* norm: a compile-time constant, so the plain walk is the code it always was (every branch inside
 * the loop callback multiplies the verifier's work on kernels that check callbacks until their
 * states converge: 6.12 and later). */
static __always_inline int write_name(struct walk_ctx *c, struct dentry *d, const int norm)
{
	const unsigned char *name = BPF_CORE_READ(d, d_name.name);
	__u32 len = BPF_CORE_READ(d, d_name.len);
	if (len > 255)
		len = 255;
	if (norm && c->on_proc && all_digits(name, len)) {
		if (2 >= c->pos) {
			c->trunc = 1;
			return 1;
		}
		c->pos -= 1;
		c->wb->buf[c->pos & (STANCE_PATH_MAX - 1)] = '*';
		c->pos -= 1;
		c->wb->buf[c->pos & (STANCE_PATH_MAX - 1)] = '/';
		return 0;
	}
	if (len + 1 >= c->pos) {
		c->trunc = 1;
		return 1;
	}
	c->pos -= len;
	bpf_probe_read_kernel(&c->wb->buf[BOUND(c->pos, 4095)], BOUND(len, 255), name);
	c->pos -= 1;
	c->wb->buf[c->pos & (STANCE_PATH_MAX - 1)] = '/';
	return 0;
}

static __always_inline long walk_step_impl(__u32 index, void *ctx, const int norm)
{
	struct walk_ctx *c = ctx;
	struct dentry *d = c->dentry;
	struct vfsmount *vfsmnt = (struct vfsmount *)((void *)c->mnt + bpf_core_field_offset(struct mount, mnt));

	if (d == c->root_dentry && vfsmnt == c->root_mnt) {
		c->done = 1;
		return 1;
	}
	struct dentry *parent = BPF_CORE_READ(d, d_parent);
	if (d == c->mnt_root || d == parent) {
		if (d != c->mnt_root) {
			/* A dentry that is its own parent but not a mount root: an anonymous or
			 * pseudo file (memfd, pipe, socket). Its name is all there is. */
			c->anon = 1;
			if (!write_name(c, d, norm))
				c->done = 1;
			return 1;
		}
		struct mount *mnt = c->mnt;
		struct mount *mparent = BPF_CORE_READ(mnt, mnt_parent);
		if (mparent == mnt) {
			/* The root of the mount tree. */
			c->done = 1;
			return 1;
		}
		c->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		c->mnt = mparent;
		c->mnt_root = BPF_CORE_READ(mparent, mnt.mnt_root);
		if (norm)
			c->on_proc = BPF_CORE_READ(mparent, mnt.mnt_sb, s_magic) == STANCE_PROC_SUPER_MAGIC;
		return 0;
	}
	if (write_name(c, d, norm))
		return 1;
	c->dentry = parent;
	return 0;
}

/* The loop callback of the plain walk. */
static long walk_step(__u32 index, void *ctx)
{
	return walk_step_impl(index, ctx, 0);
}

struct walk_result {
	__u32 start;
	__u32 len;
	__u32 trunc;
	__u32 anon;
};

/*
 * Resolve a struct path to an absolute path as the task sees it (up to its root), written at the
 * end of walk_scratch. Returns the start offset and length there. `step` is the loop callback:
 * walk_step, or (the enforcer's file lookups) one that writes all-digit names of dentries on
 * procfs as "*", with norm_proc set.
 */
static __always_inline int resolve_path_impl(struct dentry *dentry, struct vfsmount *vfsmnt,
					     struct task_struct *task, struct walk_result *res,
					     long (*step)(__u32, void *), const int norm_proc)
{
	__u32 zero = 0;
	struct walk_buf *wb = bpf_map_lookup_elem(&walk_scratch, &zero);
	if (!wb || !dentry || !vfsmnt)
		return -1;
	struct walk_ctx c = {
		.dentry = dentry,
		.mnt = (struct mount *)((void *)vfsmnt - bpf_core_field_offset(struct mount, mnt)),
		.mnt_root = BPF_CORE_READ(vfsmnt, mnt_root),
		.root_dentry = BPF_CORE_READ(task, fs, root.dentry),
		.root_mnt = BPF_CORE_READ(task, fs, root.mnt),
		.wb = wb,
		.pos = STANCE_PATH_MAX - 1,
	};
	if (norm_proc)
		c.on_proc = BPF_CORE_READ(vfsmnt, mnt_sb, s_magic) == STANCE_PROC_SUPER_MAGIC;
	bpf_loop(MAX_COMPONENTS, step, &c, 0);
	if (!c.done)
		c.trunc = 1;
	if (c.pos == STANCE_PATH_MAX - 1) {
		c.pos -= 1;
		wb->buf[c.pos & (STANCE_PATH_MAX - 1)] = '/';
	}
	res->start = c.pos;
	res->len = STANCE_PATH_MAX - 1 - c.pos;
	res->trunc = c.trunc;
	res->anon = c.anon;
	return 0;
}

/* The real path (observation, reports, exec and unix rules). */
static __noinline int resolve_path(struct dentry *dentry, struct vfsmount *vfsmnt, struct task_struct *task,
				   struct walk_result *res)
{
	return resolve_path_impl(dentry, vfsmnt, task, res, walk_step, 0);
}

static __always_inline struct file *task_exe_file(struct task_struct *task)
{
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	if (!mm)
		return NULL;
	return BPF_CORE_READ(mm, exe_file);
}

/*
 * The current task's executable identity by direct loads through BTF pointers (no helper calls):
 * this runs for every open and connect before the dedup lookup, so it must be cheap. Two loads
 * fewer would key on the exe_file or inode pointer instead, but those objects are freed when the
 * last process of an executable exits and their memory is reused, possibly for another executable
 * within the dedup window, whose first actions would then be counted as the old one's repeats.
 * Inode number and device stay with the file.
 */
static __always_inline void current_exe_id(struct task_struct *task, __u64 *ino, __u32 *dev)
{
	struct mm_struct *mm = task->mm;
	if (!mm)
		return;
	struct file *exe = mm->exe_file;
	if (!exe)
		return;
	struct inode *inode = exe->f_inode;
	if (!inode)
		return;
	*ino = inode->i_ino;
	*dev = inode->i_sb->s_dev;
}

static __always_inline void file_id(struct file *f, __u64 *ino, __u32 *dev)
{
	*ino = BPF_CORE_READ(f, f_inode, i_ino);
	*dev = BPF_CORE_READ(f, f_inode, i_sb, s_dev);
}

#endif /* STANCE_PATH_BPF_H */
