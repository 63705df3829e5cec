//! Finds, downloads and caches Debian's cloud kernels.
//!
//! Package names move with every ABI bump (`linux-image-6.1.0-57-…`, `linux-image-6.12.117+deb12-…`),
//! so the newest one apt knows is picked at run time. Only the `vmlinuz` is kept, under
//! `<cache>/kernels/<package>_<version>/`; a later run with the same newest package boots from there
//! without touching the network.

use std::{
    fmt,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{cmd, Error, Result};

/// A kernel line the tier tests on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Series {
    V6_1,
    V6_12,
}

impl Series {
    pub const ALL: [Series; 2] = [Series::V6_1, Series::V6_12];

    /// Short name used on the command line and as the prefix of every console line.
    pub fn label(self) -> &'static str {
        match self {
            Series::V6_1 => "6.1",
            Series::V6_12 => "6.12",
        }
    }

    /// Regex for `apt-cache search --names-only`. 6.1's ABI names look like `6.1.0-57`, 6.12's like
    /// `6.12.117+deb12` (security/point updates) or `6.12.x+bpo` (backports); the escaped dot keeps
    /// `6.1.` from matching `6.12.`.
    pub fn package_pattern(self) -> String {
        let escaped = self.label().replace('.', r"\.");
        format!(r"^linux-image-{escaped}\.[0-9][^ ]*-cloud-amd64-unsigned$")
    }
}

impl fmt::Display for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A kernel ready to boot.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub series: Series,
    pub package: String,
    pub version: String,
    pub vmlinuz: PathBuf,
    /// False when the vmlinuz came from the cache.
    pub downloaded: bool,
}

/// Resolves the newest package of `series` and returns its cached (or freshly downloaded) vmlinuz.
pub fn fetch(series: Series, cache: &Path) -> Result<Kernel> {
    let (package, version) = newest_package(series)?;
    let dir = cache.join("kernels").join(format!("{package}_{}", version.replace(':', "%3a")));
    let vmlinuz = dir.join("vmlinuz");
    if vmlinuz.is_file() {
        return Ok(Kernel { series, package, version, vmlinuz, downloaded: false });
    }
    std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    extract_vmlinuz(&package, &version, &dir)?;
    Ok(Kernel { series, package, version, vmlinuz, downloaded: true })
}

/// The newest `(package, candidate version)` of `series` that apt can install now.
pub fn newest_package(series: Series) -> Result<(String, String)> {
    let pattern = series.package_pattern();
    let mut found = candidates(&pattern)?;
    if found.is_empty() {
        // Fresh machines and containers often have no package lists yet.
        cmd::checked(Command::new("apt-get").arg("update"))?;
        found = candidates(&pattern)?;
    }
    let mut newest: Option<(String, String)> = None;
    for (package, version) in found {
        let newer = match &newest {
            None => true,
            Some((_, best)) => version_greater(&version, best)?,
        };
        if newer {
            newest = Some((package, version));
        }
    }
    newest.ok_or(Error::KernelNotFound { pattern })
}

/// Packages matching `pattern` that apt could install now, with their candidate versions.
fn candidates(pattern: &str) -> Result<Vec<(String, String)>> {
    let search = cmd::checked(Command::new("apt-cache").args(["search", "--names-only", pattern]))?;
    let names = parse_search(&String::from_utf8_lossy(&search.stdout));
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let policy = cmd::checked(Command::new("apt-cache").arg("policy").args(&names))?;
    Ok(parse_policy(&String::from_utf8_lossy(&policy.stdout)))
}

/// Package names from `apt-cache search` lines (`name - description`).
pub fn parse_search(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split(" - ").next())
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(String::from)
        .collect()
}

/// `(package, candidate)` pairs from `apt-cache policy`, leaving out packages without a candidate.
pub fn parse_policy(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut package: Option<&str> = None;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            package = line.strip_suffix(':');
        } else if let (Some(p), Some(v)) = (package, line.trim().strip_prefix("Candidate:")) {
            let v = v.trim();
            if v != "(none)" {
                out.push((p.to_owned(), v.to_owned()));
            }
        }
    }
    out
}

/// Debian version order, as dpkg itself defines it.
fn version_greater(a: &str, b: &str) -> Result<bool> {
    let out = cmd::output(Command::new("dpkg").args(["--compare-versions", a, "gt", b]))?;
    Ok(out.status.success())
}

/// `apt-get download` + `dpkg -x` in a scratch directory; only `vmlinuz` is moved into `dir`.
fn extract_vmlinuz(package: &str, version: &str, dir: &Path) -> Result<()> {
    let scratch = tempfile::Builder::new().prefix("download-").tempdir_in(dir).map_err(Error::io(dir))?;
    let download = cmd::output(
        Command::new("apt-get")
            .args(["download", &format!("{package}={version}")])
            .current_dir(scratch.path()),
    )?;
    if !download.status.success() {
        let stderr = String::from_utf8_lossy(&download.stderr);
        let detail = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("apt-get download failed");
        return Err(Error::KernelDownload {
            package: package.into(),
            version: version.into(),
            detail: detail.trim().into(),
        });
    }
    let deb = only_entry(scratch.path(), |name| name.ends_with(".deb"))
        .ok_or_else(|| Error::NoVmlinuz { package: package.into() })?;
    let tree = scratch.path().join("tree");
    cmd::checked(Command::new("dpkg").arg("-x").arg(&deb).arg(&tree))?;
    let image = only_entry(&tree.join("boot"), |name| name.starts_with("vmlinuz-"))
        .ok_or_else(|| Error::NoVmlinuz { package: package.into() })?;
    // Copy then rename, so an interrupted run never leaves a truncated vmlinuz that looks cached.
    let partial = dir.join("vmlinuz.partial");
    std::fs::copy(&image, &partial).map_err(Error::io(&image))?;
    std::fs::rename(&partial, dir.join("vmlinuz")).map_err(Error::io(&partial))
}

fn only_entry(dir: &Path, wanted: impl Fn(&str) -> bool) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_keep_the_series_apart() {
        assert_eq!(Series::V6_1.package_pattern(), r"^linux-image-6\.1\.[0-9][^ ]*-cloud-amd64-unsigned$");
        assert!(Series::V6_12.package_pattern().starts_with(r"^linux-image-6\.12\."));
    }

    #[test]
    fn search_lines_give_names() {
        let text = "linux-image-6.1.0-57-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud\n\
                    linux-image-6.1.0-50-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud\n";
        assert_eq!(
            parse_search(text),
            ["linux-image-6.1.0-57-cloud-amd64-unsigned", "linux-image-6.1.0-50-cloud-amd64-unsigned"]
        );
        assert!(parse_search("").is_empty());
    }

    #[test]
    fn policy_gives_candidates_and_skips_none() {
        let text = "\
linux-image-6.12.117+deb12-cloud-amd64-unsigned:
  Installed: (none)
  Candidate: 6.12.117-1~deb12u1
  Version table:
     6.12.117-1~deb12u1 500
        500 http://example/debian-security bookworm-security/main amd64 Packages
linux-image-6.12.1+bpo-cloud-amd64-unsigned:
  Installed: (none)
  Candidate: (none)
  Version table:
";
        assert_eq!(
            parse_policy(text),
            [("linux-image-6.12.117+deb12-cloud-amd64-unsigned".to_owned(), "6.12.117-1~deb12u1".to_owned())]
        );
    }
}
