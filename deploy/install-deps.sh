#!/usr/bin/env bash
# Installs what building, running and testing Stance needs on Debian 12, and nothing that is
# already there. Called by `make run`, `make test` and `make bench`; safe to run again.
set -euo pipefail

# Build: clang-19 compiles the BPF programs, bpftool makes vmlinux.h, libbpf-dev has bpf_helpers.h,
# libclang-19-dev lets bindgen generate the Rust side of the event layouts.
# VM tier (enforcement tests on Debian kernels): qemu, busybox-static, cpio.
# Tests: python3 drives scenario workloads; graphviz checks DOT output; util-linux has setpriv.
# Dashboard: nodejs and npm build web/; chromium (driven by playwright-core) runs the browser test.
# Recommender quality (host replay test and VM scenario 41): real servers and their clients.
PKGS=(clang-19 llvm-19 libbpf-dev bpftool libclang-19-dev pkg-config gcc libc6-dev make
      qemu-system-x86 busybox-static cpio python3 iproute2 procps util-linux graphviz ca-certificates
      chromium chromium-driver nginx-light redis-server redis-tools memcached curl)
# A node that ships its own npm (e.g. another distribution of nodejs) is used as it is: Debian's npm
# package would conflict with it.
command -v npm >/dev/null 2>&1 || PKGS+=(nodejs npm)
PKGS+=("$@")

missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # The servers are only ever started by the tests: their packages must not start services
    # (policy-rc.d 101 = "not allowed"), unless the machine already has its own policy.
    own_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ -z "$own_policy" ] || { rm -f /usr/sbin/policy-rc.d; trap - EXIT; }
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: cargo not found: this project builds with the machine's Rust toolchain (rustup)" >&2
    exit 1
fi

# Kernel filesystems the daemon and tests use.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing

# Export tests check generated NetworkPolicies with kubernetes-validate (PyPI), which bundles the
# Kubernetes schemas. It lives in its own venv built from Debian's python3, so it neither needs
# pip to write into the system Python (PEP 668) nor depends on which other Python is first on PATH.
K8S_VALIDATE_VENV=/opt/stance/venv
if ! "$K8S_VALIDATE_VENV/bin/kubernetes-validate" --version >/dev/null 2>&1; then
    if ! dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q "install ok installed"; then
        echo "install-deps: installing python3-venv"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    fi
    echo "install-deps: installing kubernetes-validate in $K8S_VALIDATE_VENV"
    /usr/bin/python3 -m venv "$K8S_VALIDATE_VENV"
    "$K8S_VALIDATE_VENV/bin/pip" install -q --disable-pip-version-check "kubernetes-validate~=1.37.0"
fi
