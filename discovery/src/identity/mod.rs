//! cgroup id → cgroup path → workload identity.
//!
//! Every event the probes send carries the cgroup id of the acting task (the inode number of its
//! cgroup2 directory). The pipeline asks a [`Resolver`] for the cgroup's path, and [`classify`] turns
//! that path into the [`Identity`] the behaviour graph is keyed on: a `stance launch` workload, a
//! container, a systemd unit, or the host. This is the only place that knows how container runtimes,
//! kubelet and systemd lay out the cgroup tree.
//!
//! - `mount`: where the cgroup2 hierarchy is mounted (read from mountinfo).
//! - `classify`: pure path → identity rules.
//! - `resolver`: the id → path cache, filled by a tree walk and by the kernel's mkdir/rmdir events.

mod classify;
mod mount;
mod resolver;

use std::{io, path::PathBuf};

pub use classify::classify;
pub use mount::{cgroup2_mount, cgroup2_mount_from_mountinfo};
pub use resolver::Resolver;

#[cfg(doc)]
use crate::model::Identity;

/// Why the cgroup2 hierarchy could not be found or read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// mountinfo lists no cgroup2 mount of the hierarchy's root.
    #[error("no cgroup2 filesystem is mounted (looked in {mountinfo})")]
    NoCgroup2 { mountinfo: String },
    /// A file or directory needed to find or walk the hierarchy could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}
