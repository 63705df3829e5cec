//! `--install-deps`: the explicit install step for a fresh Debian 12 machine. The normal run never
//! changes the system's apt configuration; only this step may, and it says so when it does.

use std::{path::Path, process::Command};

use crate::{
    cmd,
    kernels::{self, Series},
    Error, Result,
};

/// Host packages the tier needs: QEMU and the initramfs tools for the harness (gzip is Essential,
/// so always there), and the BPF toolchain for building the canary (build.rs).
pub const PACKAGES: &[&str] =
    &["qemu-system-x86", "busybox-static", "cpio", "clang-19", "llvm-19", "libbpf-dev", "bpftool"];

/// The sources file this step writes when the configured suites carry no 6.12 cloud kernel.
pub const BACKPORTS_SOURCES: &str = "/etc/apt/sources.list.d/stance-vmtest-bookworm-backports.sources";

/// `apt-get update`; `apt-get install` of [`PACKAGES`]; then a check that apt can see a cloud kernel
/// of every series. Bookworm carries 6.12 in bookworm-security / point releases (`+deb12` builds);
/// only if no 6.12 kernel is visible does it add bookworm-backports (same mirror as the system's
/// `bookworm` suite) in [`BACKPORTS_SOURCES`] and update again.
pub fn ensure_packages() -> Result<()> {
    apt_get(&["update"])?;
    apt_get(
        &["install", "-y", "--no-install-recommends"].iter().chain(PACKAGES).copied().collect::<Vec<_>>(),
    )?;
    for series in Series::ALL {
        match kernels::newest_package(series) {
            Ok((package, version)) => {
                println!("stance-vmtest: {series} kernel available: {package} {version}")
            }
            Err(Error::KernelNotFound { .. })
                if series == Series::V6_12 && !Path::new(BACKPORTS_SOURCES).exists() =>
            {
                add_backports()?;
                let (package, version) = kernels::newest_package(series)?;
                println!(
                    "stance-vmtest: {series} kernel available from bookworm-backports: {package} {version}"
                );
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn apt_get(args: &[&str]) -> Result<()> {
    cmd::inherited(Command::new("apt-get").args(args).env("DEBIAN_FRONTEND", "noninteractive"))
}

fn add_backports() -> Result<()> {
    let policy = cmd::checked(Command::new("apt-cache").arg("policy"))?;
    let uri = bookworm_mirror(&String::from_utf8_lossy(&policy.stdout)).ok_or(Error::NoBookwormSuite)?;
    let text = format!(
        "# Added by `stance-vmtest --install-deps`: the VM test tier boots Debian's 6.12 cloud kernel.\n\
         Types: deb\nURIs: {uri}\nSuites: bookworm-backports\nComponents: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    );
    std::fs::write(BACKPORTS_SOURCES, text).map_err(Error::io(BACKPORTS_SOURCES))?;
    println!("stance-vmtest: no 6.12 cloud kernel in the configured suites; added {BACKPORTS_SOURCES}");
    apt_get(&["update"])
}

/// The mirror URI of the plain `bookworm` suite in `apt-cache policy` output
/// (` 500 <uri> bookworm/main amd64 Packages`).
pub fn bookworm_mirror(policy: &str) -> Option<String> {
    policy.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, uri, "bookworm/main", ..] => Some((*uri).to_owned()),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_bookworm_mirror_not_security_or_updates() {
        let policy = "Package files:\n 100 /var/lib/dpkg/status\n     release a=now\n \
            500 http://mirror.example/debian-security bookworm-security/main amd64 Packages\n \
            500 http://mirror.example/debian bookworm-updates/main amd64 Packages\n \
            500 http://mirror.example/debian bookworm/main amd64 Packages\n";
        assert_eq!(bookworm_mirror(policy).as_deref(), Some("http://mirror.example/debian"));
        assert_eq!(bookworm_mirror("Package files:\n"), None);
    }
}
