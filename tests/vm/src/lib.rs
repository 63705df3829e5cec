//! `stance-vmtest`: the VM tier of Stance's tests. This machine's kernel refuses BPF-LSM programs, so
//! whatever needs BPF-LSM (and the check that Stance's BPF objects load on older kernels) runs inside
//! QEMU guests booting Debian's own 6.1 and 6.12 cloud kernels.
//!
//! One run flows one way:
//!
//! ```text
//! deps (--install-deps: apt packages)      kernels (apt-get download, dpkg -x, cache vmlinuz)
//!   → initramfs (busybox, --bin files + ldd libraries, scenarios, generated /init; cpio newc + gzip)
//!   → vm (qemu TCG, serial console streamed live, markers parsed into a Transcript)
//!   → report (PASS/FAIL per kernel × scenario, `N passed, M failed`)
//! ```
//!
//! The guest speaks to the host only through marker lines on the serial console (see [`markers`]).

pub mod cmd;
pub mod deps;
pub mod error;
pub mod initramfs;
pub mod kernels;
pub mod markers;
pub mod report;
pub mod vm;

pub use error::{Error, Result};
