//! The start-up self-test: proof that the attached programs really deny, in a throwaway cgroup.
//! BPF-LSM can be compiled in and still not run (bpf missing from the kernel's active LSM list), in
//! which case attaching "succeeds" and nothing is ever denied; only a real deny proves it.
//!
//! The probe is a forked child that joins the canary cgroup and tries one thing (open a file,
//! connect to a listener) with no exec in between, so the canary policy can allow nothing at all.
//! Between fork and _exit the child only makes async-signal-safe calls (open, write, close,
//! socket, connect), as a child of a multi-threaded process must.

use super::{Mode, Modes, Policy, StartOptions, CANARY_POLICY_ID};
use std::{
    ffi::CString,
    io,
    net::SocketAddrV4,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
};

/// What the child saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// EPERM: the programs enforce.
    Denied,
    /// The action succeeded inside the enforced cgroup: they do not.
    NotDenied,
    /// The probe itself could not run (with why).
    Failed(String),
}

const NAME_PREFIX: &str = "stance-enforce-canary-";

/// A name no other canary of this process uses: `<pid>-<n>`. Enforcers started at the same time in
/// one process (tests do) must not share, and remove, each other's cgroup or file. The pid comes
/// first, so `remove_stale` can tell a dead process's leftovers.
fn unique_suffix() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

/// A cgroup made for the canary and removed when dropped.
pub struct CanaryCgroup {
    dir: PathBuf,
    pub id: u64,
    procs: CString,
}

impl CanaryCgroup {
    pub fn create(cgroup_mount: &Path, tag: &str) -> io::Result<CanaryCgroup> {
        let dir = cgroup_mount.join(format!("{NAME_PREFIX}{}-{tag}", unique_suffix()));
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let id = std::fs::metadata(&dir)?.ino();
        let procs =
            CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).map_err(io::Error::other)?;
        Ok(CanaryCgroup { dir, id, procs })
    }

    /// Forks a child that joins this cgroup and runs `probe`; returns the child's exit status.
    /// `probe` must only make async-signal-safe calls and must not allocate.
    fn run(&self, probe: impl FnOnce() -> i32) -> io::Result<i32> {
        // SAFETY: fork in a possibly multi-threaded process: the child only calls
        // async-signal-safe functions (open, write, close, the probe's calls, _exit) and never
        // returns into Rust code that could take a lock.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: see above; the path is a valid NUL-terminated string prepared before fork.
            unsafe {
                let fd = libc::open(self.procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    libc::_exit(3);
                }
                libc::close(fd);
                libc::_exit(probe());
            }
        }
        let mut status = 0;
        // SAFETY: waiting for the child we just forked, with a valid out-pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::WIFEXITED(status) {
            Ok(libc::WEXITSTATUS(status))
        } else {
            Ok(128 + libc::WTERMSIG(status))
        }
    }

    fn outcome(&self, what: &str, probe: impl FnOnce() -> i32) -> Outcome {
        match self.run(probe) {
            Ok(0) => Outcome::Denied,
            Ok(1) => Outcome::NotDenied,
            Ok(3) => Outcome::Failed(format!("the {what} probe could not join {}", self.dir.display())),
            Ok(n) => Outcome::Failed(format!("the {what} probe failed otherwise (status {n})")),
            Err(e) => Outcome::Failed(format!("cannot fork the {what} probe: {e}")),
        }
    }

    /// Opening `target` for reading inside the cgroup: 0 EPERM, 1 opened, 2 another error.
    pub fn open_probe(&self, target: &Path) -> Outcome {
        let Ok(path) = CString::new(target.as_os_str().as_bytes()) else {
            return Outcome::Failed("canary path has a NUL byte".into());
        };
        self.outcome("open", move || {
            // SAFETY: async-signal-safe calls with a valid path; errno read right after.
            unsafe {
                let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                if fd >= 0 {
                    return 1;
                }
                if *libc::__errno_location() == libc::EPERM {
                    0
                } else {
                    2
                }
            }
        })
    }

    /// A TCP connect to `to` inside the cgroup: 0 EPERM, 1 connected, 2 another error.
    pub fn connect_probe(&self, to: SocketAddrV4) -> Outcome {
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: to.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(*to.ip()).to_be() },
            sin_zero: [0; 8],
        };
        self.outcome("connect", move || {
            // SAFETY: async-signal-safe calls with a valid sockaddr on this (the child's) stack.
            unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                if fd < 0 {
                    return 2;
                }
                let rc = libc::connect(
                    fd,
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                );
                if rc == 0 {
                    return 1;
                }
                if *libc::__errno_location() == libc::EPERM {
                    0
                } else {
                    2
                }
            }
        })
    }
}

impl Drop for CanaryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Removes canary cgroups left by daemons that died during their self-test.
pub fn remove_stale(cgroup_mount: &Path) {
    let Ok(rd) = std::fs::read_dir(cgroup_mount) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(NAME_PREFIX) else { continue };
        let pid: Option<i32> = rest.split('-').next().and_then(|p| p.parse().ok());
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

impl super::Enforcer {
    /// BPF-LSM denies for real: a child in a throwaway cgroup whose file domain is in enforce with
    /// nothing allowed is refused a file, which this process (outside the cgroup) can read.
    pub(super) fn lsm_canary(&mut self, opts: &StartOptions) -> Result<(), String> {
        let target = std::env::temp_dir().join(format!("{NAME_PREFIX}{}", unique_suffix()));
        std::fs::write(&target, b"canary\n").map_err(|e| format!("canary file {}: {e}", target.display()))?;
        let result = (|| {
            let cg = CanaryCgroup::create(&opts.cgroup_mount, "lsm")
                .map_err(|e| format!("canary cgroup under {}: {e}", opts.cgroup_mount.display()))?;
            let modes = Modes { file: Mode::Enforce, ..Default::default() };
            self.apply("stance canary", CANARY_POLICY_ID, &[cg.id], &Policy::default(), modes)
                .map_err(|e| format!("canary policy: {e}"))?;
            let outcome = cg.open_probe(&target);
            let _ = self.release(CANARY_POLICY_ID);
            match outcome {
                Outcome::Denied => {}
                Outcome::NotDenied => return Err("BPF-LSM is not active: canary was not denied".to_owned()),
                Outcome::Failed(why) => return Err(format!("BPF-LSM canary could not run: {why}")),
            }
            std::fs::read(&target).map(|_| ()).map_err(|e| {
                format!("BPF-LSM canary: the same open outside the canary cgroup failed too: {e}")
            })
        })();
        let _ = std::fs::remove_file(&target);
        result
    }
}
