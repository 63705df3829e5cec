/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Layout shared by canary.bpf.c and the Rust loader (src/bin/canary-loader.rs mirrors it and
 * asserts its size at compile time): the single entry of the `canary_config` array map.
 */
#ifndef STANCE_CANARY_H
#define STANCE_CANARY_H

struct canary_config {
	/* cgroup v2 id (= inode number of the cgroup directory) whose opens are denied; 0 disables. */
	__u64 cgroup_id;
	/* inode number of the one file that is denied. */
	__u64 target_ino;
};

#endif
