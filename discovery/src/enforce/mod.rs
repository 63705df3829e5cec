//! Enforcement: Stance's own BPF-LSM programs, scoped to workloads put into audit or enforce.
//! (being built: see issue "Enforce")

pub mod policy;
