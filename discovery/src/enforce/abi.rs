//! The enforcement maps' keys and values and the verdict record, generated from
//! `probes-ebpf/include/stance_enforce.h` by build.rs (bindgen). Normal builds use the freshly
//! generated file and fail if the committed copy (`abi_generated.rs`, used by `STANCE_SKIP_BPF=1`
//! builds) is stale, so the C and Rust layouts cannot drift.

#![allow(non_camel_case_types, non_upper_case_globals, dead_code, clippy::all)]

#[cfg(not(stance_skip_bpf))]
include!(concat!(env!("OUT_DIR"), "/enforce_abi.rs"));
#[cfg(stance_skip_bpf)]
include!("abi_generated.rs");

/// File access bits, from stance_events.h (the same bits observation reports).
pub use crate::probes::abi::{STANCE_ACC_READ, STANCE_ACC_WRITE};

/// The data part of an `net_rules` key (aya's `lpm_trie::Key` adds the prefix length in front):
/// `struct stance_net_key` without its `prefixlen`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct net_key_data {
    pub policy_id: u32,
    pub rev: u32,
    pub addr: [u8; 16],
}

const _: () = {
    assert!(
        core::mem::size_of::<net_key_data>() + 4 == core::mem::size_of::<stance_net_key>(),
        "net_key_data must be stance_net_key without prefixlen"
    );
    assert!(core::mem::offset_of!(stance_net_key, policy_id) == 4);
};

// SAFETY: plain C structs of integers and byte arrays (bindgen output for stance_enforce.h, and
// net_key_data above), valid for any bit pattern, which is what aya's Pod requires for map keys
// and values. Padding fields are explicit (`_pad`), so there are no uninitialised bytes.
unsafe impl aya::Pod for stance_cgroup_policy {}
unsafe impl aya::Pod for stance_policy_key {}
unsafe impl aya::Pod for stance_policy_info {}
unsafe impl aya::Pod for stance_file_key {}
unsafe impl aya::Pod for stance_file_rule {}
unsafe impl aya::Pod for stance_exec_key {}
unsafe impl aya::Pod for stance_exec_rule {}
unsafe impl aya::Pod for stance_net_rule {}
unsafe impl aya::Pod for stance_unix_key {}
unsafe impl aya::Pod for stance_unix_rule {}
unsafe impl aya::Pod for stance_enforce_meta {}
unsafe impl aya::Pod for net_key_data {}
