#!/bin/sh
# The guest is fit for Stance's BPF-LSM tests: bpf is an active LSM, and bpffs and cgroup2 are
# mounted where Stance expects them.
fail() { echo "FAIL: $*"; exit 1; }

lsm=$(cat /sys/kernel/security/lsm) || fail "cannot read /sys/kernel/security/lsm (securityfs not mounted?)"
case ",$lsm," in
    *,bpf,*) echo "ok: bpf is an active LSM ($lsm)" ;;
    *) fail "bpf is not in /sys/kernel/security/lsm: $lsm" ;;
esac

mounted() { grep -q "^[^ ]* $1 $2 " /proc/mounts; }
mounted /sys/fs/bpf bpf || fail "bpffs is not mounted at /sys/fs/bpf"
echo "ok: bpffs at /sys/fs/bpf"
mounted /sys/fs/cgroup cgroup2 || fail "cgroup2 is not mounted at /sys/fs/cgroup"
echo "ok: cgroup2 at /sys/fs/cgroup"
[ -r /sys/kernel/btf/vmlinux ] || fail "no kernel BTF at /sys/kernel/btf/vmlinux"
echo "ok: kernel BTF present"
