//! The kernel↔user record layouts, generated from `probes-ebpf/include/stance_events.h` by
//! build.rs (bindgen). Normal builds use the freshly generated file and fail if the committed copy
//! (`abi_generated.rs`, used by `STANCE_SKIP_BPF=1` builds) is stale, so the layouts cannot drift.

#![allow(non_camel_case_types, non_upper_case_globals, dead_code, clippy::all)]

#[cfg(not(stance_skip_bpf))]
include!(concat!(env!("OUT_DIR"), "/abi.rs"));
#[cfg(stance_skip_bpf)]
include!("abi_generated.rs");

// SAFETY: plain C structs of integers and byte arrays, no padding that carries meaning, valid for
// any bit pattern — what aya's Pod requires for map keys and values.
unsafe impl aya::Pod for stance_losses {}
// SAFETY: as above.
unsafe impl aya::Pod for stance_dedup_key {}
// SAFETY: as above.
unsafe impl aya::Pod for stance_dedup_val {}
// SAFETY: as above.
unsafe impl aya::Pod for stance_dedup_slot {}

/// Size of the fixed part of every record: header plus the reserved body.
pub const FIXED_LEN: usize = core::mem::size_of::<stance_event_header>() + STANCE_BODY_SIZE as usize;

const _: () = {
    assert!(core::mem::size_of::<stance_exec_body>() <= STANCE_BODY_SIZE as usize);
    assert!(core::mem::size_of::<stance_open_body>() <= STANCE_BODY_SIZE as usize);
    assert!(core::mem::size_of::<stance_net_body>() <= STANCE_BODY_SIZE as usize);
    assert!(core::mem::size_of::<stance_cap_body>() <= STANCE_BODY_SIZE as usize);
    assert!(core::mem::size_of::<stance_proc_body>() <= STANCE_BODY_SIZE as usize);
    assert!(core::mem::size_of::<stance_cgroup_body>() <= STANCE_BODY_SIZE as usize);
};
