// SPDX-License-Identifier: GPL-2.0
/*
 * BPF-LSM canary for the VM test tier: denies opening one file (by inode) to processes in one
 * cgroup, and allows everything else. If a scenario sees this deny, BPF-LSM enforcement really
 * works in that kernel.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "canary.h"

#define EPERM 1

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct canary_config);
} canary_config SEC(".maps");

/*
 * Every exit returns a constant: 6.12's verifier must prove an LSM return value lies in
 * [-4095, 0], and a computed `cond ? -EPERM : 0` can be folded by clang into arithmetic it
 * cannot bound.
 */
SEC("lsm/file_open")
int BPF_PROG(canary_file_open, struct file *file)
{
	__u32 key = 0;
	struct canary_config *cfg = bpf_map_lookup_elem(&canary_config, &key);

	if (!cfg || cfg->cgroup_id == 0)
		return 0;
	if (bpf_get_current_cgroup_id() != cfg->cgroup_id)
		return 0;
	if (file->f_inode->i_ino != cfg->target_ino)
		return 0;
	return -EPERM;
}

char LICENSE[] SEC("license") = "GPL";
