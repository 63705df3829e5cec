//! The cgroup id → path cache the pipeline resolves every event's cgroup through.
//!
//! A cgroup's id is the inode number of its cgroup2 directory, so one walk of the tree at start-up
//! learns every existing cgroup; the kernel's mkdir/rmdir tracepoints keep the map current after that.
//! A miss (an event lost, or a cgroup born between the walk and the tracepoint attaching) triggers a
//! rescan, rate-limited so that a burst of unknown ids costs one walk.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{classify, IdentityError};
use crate::model::Identity;

/// At most one rescan per interval, however many unknown ids arrive.
const RESCAN_INTERVAL: Duration = Duration::from_millis(500);
/// Bound on remembered cgroups. Real hosts have thousands; this only stops a runaway (a lost
/// stream of rmdir events, or a hostile mkdir loop) from growing the daemon without limit.
const MAX_ENTRIES: usize = 1_000_000;
/// Path reported for an id that could not be resolved.
const UNKNOWN_PATH: &str = "?";

/// Resolves cgroup ids to paths and identities. Blocking (plain `std::fs`); run it off the async runtime.
#[derive(Debug)]
pub struct Resolver {
    /// The cgroup2 mount; paths are relative to it.
    mount: PathBuf,
    /// cgroup id → path relative to the mount, starting with `/`.
    paths: HashMap<u64, String>,
    /// The root cgroup's id, once a scan has seen it; it is `/` even if `forget` is called on it.
    root: Option<u64>,
    /// When the tree was last walked, for rate-limiting rescans on misses.
    last_scan: Option<Instant>,
    /// Whether hitting `MAX_ENTRIES` has been logged, so it is said once rather than per insert.
    warned_full: bool,
    /// Walks done so far (tests check the rate limit with it).
    scans: u64,
}

impl Resolver {
    /// A resolver for the hierarchy mounted at `mount`. Nothing is read until `scan` or a miss.
    pub fn new(mount: PathBuf) -> Self {
        Resolver { mount, paths: HashMap::new(), root: None, last_scan: None, warned_full: false, scans: 0 }
    }

    /// The cgroup2 mount this resolver walks.
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// Walk the whole tree and replace the map with what exists now (which also drops ids whose
    /// rmdir was missed). Returns how many cgroups were recorded. Only an unreadable root is an
    /// error; a subtree removed or unreadable during the walk is skipped.
    pub fn scan(&mut self) -> Result<usize, IdentityError> {
        self.last_scan = Some(Instant::now());
        self.scans += 1;
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| IdentityError::Io { path, source }
        };
        let root = fs::metadata(&self.mount).map_err(io_err(&self.mount))?.ino();
        let mut found = HashMap::from([(root, "/".to_owned())]);
        let mut pending = vec![(self.mount.clone(), String::new())];
        while let Some((dir, rel)) = pending.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(source) if rel.is_empty() => return Err(io_err(&dir)(source)),
                Err(err) => {
                    tracing::debug!(dir = %dir.display(), %err, "skipping cgroup subtree");
                    continue;
                }
            };
            for entry in entries.flatten() {
                // Not following links: cgroupfs has none, and a link elsewhere could make the walk loop.
                let Ok(meta) = entry.metadata() else { continue };
                if !meta.is_dir() {
                    continue;
                }
                if found.len() >= MAX_ENTRIES {
                    self.warn_full();
                    pending.clear();
                    break;
                }
                let child = format!("{rel}/{}", entry.file_name().to_string_lossy());
                found.insert(meta.ino(), child.clone());
                pending.push((entry.path(), child));
            }
        }
        self.root = Some(root);
        self.paths = found;
        Ok(self.paths.len())
    }

    /// Record a cgroup the kernel reported created. `path` is relative to the root, `/`-prefixed.
    pub fn learn(&mut self, id: u64, path: String) {
        if self.paths.len() >= MAX_ENTRIES && !self.paths.contains_key(&id) {
            // Dropping the newcomer keeps memory bounded; a later miss rescans, which also evicts
            // whatever stale entries filled the map.
            self.warn_full();
            return;
        }
        self.paths.insert(id, path);
    }

    /// Drop a cgroup the kernel reported removed.
    pub fn forget(&mut self, id: u64) {
        self.paths.remove(&id);
    }

    /// The path and identity of cgroup `id`. On a miss the tree is rescanned (at most once per
    /// `RESCAN_INTERVAL`); if that does not find it either, the answer is `("?", host)`, and the miss
    /// is not remembered, so the id resolves as soon as it becomes known.
    pub fn resolve(&mut self, id: u64) -> (String, Identity) {
        if let Some(found) = self.lookup(id) {
            return found;
        }
        if self.last_scan.is_none_or(|at| at.elapsed() >= RESCAN_INTERVAL) {
            if let Err(err) = self.scan() {
                let cause = std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default();
                tracing::warn!(%err, %cause, "cannot rescan cgroups");
            }
            if let Some(found) = self.lookup(id) {
                return found;
            }
        }
        (UNKNOWN_PATH.to_owned(), Identity::host())
    }

    /// True when `id` resolves without a rescan.
    pub fn knows(&self, id: u64) -> bool {
        self.root == Some(id) || self.paths.contains_key(&id)
    }

    fn lookup(&self, id: u64) -> Option<(String, Identity)> {
        if self.root == Some(id) {
            return Some(("/".to_owned(), Identity::host()));
        }
        self.paths.get(&id).map(|path| (path.clone(), classify(path)))
    }

    fn warn_full(&mut self) {
        if !self.warned_full {
            self.warned_full = true;
            tracing::warn!(limit = MAX_ENTRIES, "too many cgroups to remember; new ones resolve as host");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::WorkloadKind;

    /// A directory tree standing in for a cgroup hierarchy (the resolver only reads directories and
    /// inode numbers, so an ordinary filesystem behaves the same). Removed on drop.
    struct TempTree(PathBuf);

    impl TempTree {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("stance-identity-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("create temp tree");
            TempTree(dir)
        }

        fn mkdir(&self, rel: &str) -> u64 {
            let dir = self.0.join(rel.trim_start_matches('/'));
            fs::create_dir_all(&dir).expect("mkdir");
            fs::metadata(&dir).expect("stat").ino()
        }
    }

    impl Drop for TempTree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn scan_maps_inodes_to_paths() {
        let tree = TempTree::new("scan");
        let nginx = tree.mkdir("/system.slice/nginx.service");
        let web = tree.mkdir("/stance/web");
        fs::write(tree.0.join("system.slice/cgroup.procs"), "").expect("write file");
        let mut resolver = Resolver::new(tree.0.clone());
        // root, system.slice, nginx.service, stance, web; the file is not a cgroup.
        assert_eq!(resolver.scan().expect("scan"), 5);
        let (path, identity) = resolver.resolve(nginx);
        assert_eq!(path, "/system.slice/nginx.service");
        assert_eq!(identity.kind, WorkloadKind::Systemd);
        assert_eq!(resolver.resolve(web).1.name, "web");
        let root = fs::metadata(&tree.0).expect("stat").ino();
        assert_eq!(resolver.resolve(root), ("/".to_owned(), Identity::host()));
    }

    #[test]
    fn scan_of_missing_mount_is_an_error() {
        let mut resolver = Resolver::new(PathBuf::from("/nonexistent/stance-cgroup"));
        assert!(matches!(resolver.scan(), Err(IdentityError::Io { .. })));
        // A miss with an unreadable tree still answers.
        assert_eq!(resolver.resolve(42), ("?".to_owned(), Identity::host()));
    }

    #[test]
    fn learn_and_forget() {
        let tree = TempTree::new("learn");
        let mut resolver = Resolver::new(tree.0.clone());
        resolver.scan().expect("scan");
        resolver.learn(u64::MAX - 1, "/stance/db".to_owned());
        assert_eq!(resolver.resolve(u64::MAX - 1).0, "/stance/db");
        resolver.forget(u64::MAX - 1);
        assert_eq!(resolver.resolve(u64::MAX - 1).0, "?");
    }

    #[test]
    fn misses_rescan_at_most_once_per_interval_and_are_not_cached() {
        let tree = TempTree::new("miss");
        let mut resolver = Resolver::new(tree.0.clone());
        // The first miss walks the tree; a burst right after does not.
        for id in [u64::MAX - 10, u64::MAX - 11, u64::MAX - 12] {
            assert_eq!(resolver.resolve(id).0, "?");
        }
        assert_eq!(resolver.scans, 1);

        // A cgroup created after the walk is found once the interval has passed.
        let late = tree.mkdir("/system.slice/late.service");
        assert_eq!(resolver.resolve(late).0, "?");
        assert_eq!(resolver.scans, 1);
        resolver.last_scan = Some(Instant::now() - RESCAN_INTERVAL);
        assert_eq!(resolver.resolve(late).0, "/system.slice/late.service");
        assert_eq!(resolver.scans, 2);
    }

    /// Against the real hierarchy: a cgroup's id is its directory's inode. Needs root (tests run as
    /// root in this project).
    #[test]
    fn real_cgroup_scan() {
        let mount = crate::identity::cgroup2_mount().expect("cgroup2 mount");
        let name = format!("stance-identity-test-{}", std::process::id());
        let dir = mount.join(&name);
        fs::create_dir(&dir).expect("create test cgroup (are the tests running as root?)");
        let id = fs::metadata(&dir).expect("stat").ino();
        let mut resolver = Resolver::new(mount.clone());
        let scanned = resolver.scan();
        let resolved = resolver.resolve(id);
        let root = resolver.resolve(fs::metadata(&mount).expect("stat").ino());
        fs::remove_dir(&dir).expect("remove test cgroup");

        assert!(scanned.expect("scan") >= 2);
        assert_eq!(resolved, (format!("/{name}"), Identity::host()));
        assert_eq!(root, ("/".to_owned(), Identity::host()));
    }
}
