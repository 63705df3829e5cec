//! Finding the cgroup2 mount point. Cgroup ids and the paths the kernel reports are relative to the
//! root of the cgroup2 hierarchy, so everything else in `identity` and `launch` starts from here.

use std::{ffi::OsString, os::unix::ffi::OsStringExt, path::PathBuf};

use super::IdentityError;
use crate::paths;

/// The mount point of the cgroup2 hierarchy's root, from `/proc/self/mountinfo` text.
///
/// Handles both the pure v2 layout (`/sys/fs/cgroup`) and the hybrid one (`/sys/fs/cgroup/unified`).
/// Mounts of a subtree (root field other than `/`, e.g. a bind mount inside a container) are skipped:
/// paths under them would not be the paths the kernel reports, so classification would go wrong.
pub fn cgroup2_mount_from_mountinfo(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // Fields: id parent major:minor root mount-point options [optional...] - fstype source super-options.
        // Spaces inside fields are escaped, so " - " only ever marks the separator.
        let (before, after) = line.split_once(" - ")?;
        if after.split(' ').next()? != "cgroup2" {
            return None;
        }
        let mut fields = before.split(' ');
        let root = fields.nth(3)?;
        let mount_point = fields.next()?;
        (root == "/").then(|| PathBuf::from(OsString::from_vec(unescape_octal(mount_point))))
    })
}

/// The cgroup2 mount point of this process's mount namespace.
pub fn cgroup2_mount() -> Result<PathBuf, IdentityError> {
    let text = std::fs::read_to_string(paths::MOUNTINFO)
        .map_err(|source| IdentityError::Io { path: paths::MOUNTINFO.into(), source })?;
    cgroup2_mount_from_mountinfo(&text)
        .ok_or_else(|| IdentityError::NoCgroup2 { mountinfo: paths::MOUNTINFO.to_owned() })
}

/// Undo the kernel's `\ooo` escaping of space, tab, newline and backslash in mountinfo fields.
/// Works on bytes because a mount point need not be UTF-8 once unescaped.
fn unescape_octal(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes.get(i + 1..i + 4).filter(|_| bytes[i] == b'\\').and_then(|digits| {
            digits.iter().try_fold(0u8, |acc, &d| match d {
                b'0'..=b'7' => acc.checked_mul(8)?.checked_add(d - b'0'),
                _ => None,
            })
        });
        match escape {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hybrid-layout host (this project's test machine): v1 controllers plus v2 under `unified`.
    const HYBRID: &str = "\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// A pure v2 host (systemd default since 2021), with optional fields before the separator.
    const UNIFIED: &str = "\
24 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
27 24 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 27 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn finds_hybrid_and_unified_mounts() {
        assert_eq!(cgroup2_mount_from_mountinfo(HYBRID), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(cgroup2_mount_from_mountinfo(UNIFIED), Some(PathBuf::from("/sys/fs/cgroup")));
    }

    #[test]
    fn none_without_cgroup2() {
        let v1_only = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n";
        assert_eq!(cgroup2_mount_from_mountinfo(v1_only), None);
        assert_eq!(cgroup2_mount_from_mountinfo(""), None);
        // A line cut short must not be mistaken for anything.
        assert_eq!(cgroup2_mount_from_mountinfo("41 31 0:38 / - cgroup2"), None);
    }

    #[test]
    fn unescapes_mount_points() {
        let text = "41 31 0:38 / /mnt/my\\040cgroup\\134x rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount_from_mountinfo(text), Some(PathBuf::from("/mnt/my cgroup\\x")));
        // A backslash not followed by three octal digits is kept as it is.
        assert_eq!(unescape_octal("a\\09b\\"), b"a\\09b\\".to_vec());
    }

    #[test]
    fn skips_subtree_mounts() {
        let text = "\
50 40 0:38 /docker/abc /sys/fs/cgroup ro - cgroup2 cgroup2 rw
51 40 0:38 / /host/cgroup rw - cgroup2 cgroup2 rw
";
        assert_eq!(cgroup2_mount_from_mountinfo(text), Some(PathBuf::from("/host/cgroup")));
    }

    #[test]
    fn this_machine_has_cgroup2() {
        let mount = cgroup2_mount().expect("cgroup2 mount");
        assert!(mount.join("cgroup.procs").exists(), "{} is not a cgroup2 root", mount.display());
    }
}
