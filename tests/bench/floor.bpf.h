// SPDX-License-Identifier: GPL-2.0
/* Shared by the floor objects (floor.bpf.c for this host's hooks, floor-fexit.bpf.c for the VM's):
 * an empty program on one hook, whose only cost is the hook's own. */
#ifndef STANCE_FLOOR_BPF_H
#define STANCE_FLOOR_BPF_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>

#define EMPTY(sec, name)      \
	SEC(sec)              \
	int name(void *ctx)   \
	{                     \
		return 0;     \
	}

#endif
