//! Where the enforcer's state lives in bpffs, so that it outlives the daemon:
//!
//! ```text
//! <pin dir>/enforce-v<ABI>/maps/<map>            rules, modes, verdicts, hash keys (enforce_meta)
//! <pin dir>/enforce-v<ABI>/links/<generation>/<program>   one attached program each
//! ```
//!
//! A pinned link keeps its program attached (and the program keeps the maps it uses) after every
//! file descriptor is closed, i.e. after `kill -9`. A new daemon reuses the pinned maps, attaches its
//! own programs as a new generation, pins them, and only then unpins the previous generation: both
//! generations decide from the same maps in between, so enforcement never has a gap. A different
//! `STANCE_ENFORCE_ABI_VERSION` means a different directory: maps of another layout are never read.

use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
};

use aya::{
    maps::MapData,
    programs::links::{FdLink, PinnedLink},
};

use super::{abi, maps, EnforceError};

/// statfs(2) f_type of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Held for the enforcer's lifetime (see `PinLayout::lock`).
#[derive(Debug)]
pub struct EnforcerLock {
    _dir: fs::File,
}

#[derive(Debug, Clone)]
pub struct PinLayout {
    /// <pin dir>/enforce-v<ABI>
    pub root: PathBuf,
}

impl PinLayout {
    pub fn new(pin_dir: &Path) -> PinLayout {
        PinLayout { root: pin_dir.join(format!("enforce-v{}", abi::STANCE_ENFORCE_ABI_VERSION)) }
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.root.join("maps").join(name)
    }

    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }

    pub fn generation(&self, generation: u32) -> PathBuf {
        self.links().join(generation.to_string())
    }

    /// Creates the directories (0700: the maps are the policy and the hash keys).
    pub fn create(&self, pin_dir: &Path) -> Result<(), EnforceError> {
        ensure_bpffs(pin_dir)?;
        for dir in [self.root.join("maps"), self.links()] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|source| EnforceError::Pin { path: dir.clone(), source })?;
        }
        Ok(())
    }

    /// The pinned meta entry (hash keys, last revision and generation), if an initialised one exists.
    pub fn read_meta(&self) -> Option<abi::stance_enforce_meta> {
        let path = self.map("enforce_meta");
        if !path.exists() {
            return None;
        }
        let data = MapData::from_pin(&path).ok()?;
        let arr: aya::maps::Array<MapData, abi::stance_enforce_meta> =
            aya::maps::Array::try_from(aya::maps::Map::Array(data)).ok()?;
        arr.get(&0, 0).ok().filter(|m| m.magic == abi::STANCE_META_MAGIC)
    }

    /// One enforcer per pinned state: a second one would retire the first one's links and work from
    /// a stale view of the maps. An exclusive flock on the directory, which the kernel drops when
    /// the holder dies (so a daemon killed with SIGKILL never blocks its successor).
    pub fn lock(&self) -> Result<EnforcerLock, EnforceError> {
        let dir = fs::File::open(&self.root)
            .map_err(|source| EnforceError::Pin { path: self.root.clone(), source })?;
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&dir), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(EnforceError::Busy { path: self.root.clone() });
            }
            return Err(EnforceError::Pin { path: self.root.clone(), source: err });
        }
        Ok(EnforcerLock { _dir: dir })
    }

    /// Refuses pinned maps whose type, key, value or size differ from this build's: reusing them
    /// would make the programs read garbage. (A layout change must bump STANCE_ENFORCE_ABI_VERSION.)
    pub fn check_pinned_maps(&self) -> Result<(), EnforceError> {
        for (name, ty, key, value, max) in maps::expected_layout() {
            let path = self.map(name);
            if !path.exists() {
                continue;
            }
            let bad = |reason: String| EnforceError::PinnedState { path: path.clone(), reason };
            let data = MapData::from_pin(&path).map_err(|e| bad(format!("cannot open: {e}")))?;
            let info = data.info().map_err(|e| bad(format!("cannot read its info: {e}")))?;
            let got_ty = info.map_type().map(|t| t as u32).unwrap_or(u32::MAX);
            let got = (got_ty, info.key_size(), info.value_size(), info.max_entries());
            if got != (ty, key, value, max) {
                return Err(bad(format!(
                    "layout (type, key, value, entries) is {got:?}, this build expects {:?}; \
                     STANCE_ENFORCE_ABI_VERSION should have been bumped",
                    (ty, key, value, max)
                )));
            }
        }
        Ok(())
    }

    /// Generations pinned by earlier daemons, oldest first.
    pub fn generations(&self) -> BTreeSet<u32> {
        let Ok(rd) = fs::read_dir(self.links()) else { return BTreeSet::new() };
        rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
    }

    /// Pins an attached link as `links/<generation>/<program>`.
    pub fn pin_link(&self, generation: u32, program: &str, link: FdLink) -> Result<PinnedLink, EnforceError> {
        let dir = self.generation(generation);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| EnforceError::Pin { path: dir.clone(), source })?;
        let path = dir.join(program);
        // A leftover of a daemon that died while pinning this generation number.
        let _ = fs::remove_file(&path);
        link.pin(&path).map_err(|e| EnforceError::Pin { path, source: std::io::Error::other(e.to_string()) })
    }

    /// Unpins the links of `generation` except those named in `keep`; removes the directory when it
    /// is empty. Unpinning the last reference detaches the program. Returns what stays pinned.
    pub fn retire(&self, generation: u32, keep: &BTreeSet<String>) -> Vec<String> {
        let dir = self.generation(generation);
        let mut kept = Vec::new();
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if keep.contains(&name) {
                    kept.push(name);
                    continue;
                }
                // Opening and unpinning through aya, or (a file that is not a link) just removing.
                match PinnedLink::from_pin(e.path()) {
                    Ok(link) => {
                        if let Err(err) = link.unpin() {
                            tracing::warn!(path = %e.path().display(), %err, "cannot unpin a previous link");
                            kept.push(name);
                        }
                    }
                    Err(_) => {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
        }
        if kept.is_empty() {
            let _ = fs::remove_dir(&dir);
        }
        kept
    }

    /// Removes every pin of this layout: links (detaching their programs) and maps.
    pub fn remove_all(&self) -> Result<(), EnforceError> {
        for g in self.generations() {
            self.retire(g, &BTreeSet::new());
        }
        if self.root.exists() {
            fs::remove_dir_all(&self.root)
                .map_err(|source| EnforceError::Pin { path: self.root.clone(), source })?;
        }
        Ok(())
    }
}

/// Pinned state of other layout versions under `pin_dir` (left by an older or newer Stance).
pub fn other_layouts(pin_dir: &Path, ours: &PinLayout) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(pin_dir) else { return Vec::new() };
    rd.flatten()
        .map(|e| e.path())
        .filter(|p| {
            p != &ours.root && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("enforce-v"))
        })
        .collect()
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: statfs with a valid NUL-terminated path and a zeroed out-struct it fills.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// The pin directory must be on a bpffs. On a host (or VM) where /sys/fs/bpf is not mounted yet,
/// mount it there, as systemd would.
fn ensure_bpffs(pin_dir: &Path) -> Result<(), EnforceError> {
    let mut probe = pin_dir.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    if is_bpffs(&probe) {
        return Ok(());
    }
    let mount_point = Path::new("/sys/fs/bpf");
    if pin_dir.starts_with(mount_point) && !is_bpffs(mount_point) {
        let target = std::ffi::CString::new("/sys/fs/bpf").expect("no NUL in a constant");
        let fstype = c"bpf";
        // SAFETY: valid NUL-terminated strings for the duration of the call; data is null.
        let rc =
            unsafe { libc::mount(fstype.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
        if rc == 0 {
            let _ = fs::set_permissions(mount_point, fs::Permissions::from_mode(0o700));
            return Ok(());
        }
        return Err(EnforceError::Pin { path: mount_point.into(), source: std::io::Error::last_os_error() });
    }
    Err(EnforceError::PinnedState { path: pin_dir.into(), reason: "not on a bpf filesystem".into() })
}
