//! Stance: learns how each workload behaves and turns it into least-privilege runtime policy.
//!
//! Data flows one way, and the modules follow it:
//!
//! ```text
//! kernel (probes-ebpf/*.bpf.c) → probes (load, attach, read ring buffer, decode)
//!   → pipeline (aggregate per workload, bounded, batched) → store (SQLite behaviour graph)
//!   → queries (CLI `workloads`, `graph`)
//! ```
//!
//! `identity` turns a cgroup into the workload a policy will apply to; `launch` puts a command into a
//! named workload; `enforce` holds the policy model, its compilation from a graph, and the enforcer;
//! `control` is how `stance mode` reaches the daemon and the actor that owns the enforcer (fed by the
//! store's graphs and, one way, by the pipeline's newly seen cgroups); `daemon` wires everything
//! together for `stance run`; `api` serves the REST API, metrics and the dashboard from it.

pub mod api;
pub mod config;
pub mod control;
pub mod daemon;
pub mod enforce;
pub mod export;
pub mod identity;
pub mod launch;
pub mod model;
pub mod paths;
pub mod pipeline;
pub mod probes;
pub mod recommend;
pub mod store;
