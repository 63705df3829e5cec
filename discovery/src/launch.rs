//! `stance launch --workload NAME -- CMD [ARGS...]`: run a command as the named workload.
//!
//! This is how a user puts something under observation without a container runtime or a systemd
//! unit: the command runs in the cgroup `<cgroup2 mount>/stance/NAME`, which `identity::classify`
//! names workload `NAME` (kind `launched`). The child joins the cgroup between fork and exec, so
//! the daemon sees the command's own exec, and everything after it, inside the workload. The cgroup
//! is left in place afterwards: the daemon and the enforcer key on it, and a later launch reuses it.

use std::{
    ffi::{OsStr, OsString},
    fs::{self, File},
    io::{self, Read},
    mem::MaybeUninit,
    os::{
        fd::{AsRawFd, RawFd},
        unix::process::{CommandExt, ExitStatusExt},
    },
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus},
    ptr,
};

use crate::{
    identity::{self, IdentityError},
    paths,
};

/// Longest accepted workload name.
const MAX_NAME_LEN: usize = 64;
/// Signals sent to `stance launch` that are passed on to the command.
const FORWARDED: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];
/// How long the wait loop sleeps before checking on the child again. SIGCHLD normally wakes it
/// at once; this only bounds the delay where SIGCHLD went to another thread (e.g. under a test harness).
const POLL: libc::timespec = libc::timespec { tv_sec: 0, tv_nsec: 100_000_000 };

/// Why a command could not be launched.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("invalid workload name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("no command given")]
    NoCommand,
    #[error("must run as root to create cgroups")]
    NotRoot,
    #[error("cannot find the cgroup2 hierarchy")]
    NoCgroup2(#[from] IdentityError),
    #[error("cannot create cgroup {}", path.display())]
    CreateCgroup {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The cgroup exists but the command could not be put into it (so it was not run).
    #[error("cannot move {cmd} into cgroup {}", path.display())]
    JoinCgroup {
        cmd: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot run {cmd}")]
    Spawn {
        cmd: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot set up signal forwarding")]
    Signals(#[source] io::Error),
    #[error("cannot wait for {cmd}")]
    Wait {
        cmd: String,
        #[source]
        source: io::Error,
    },
}

/// Check a workload name: 1–64 characters of `[A-Za-z0-9._-]`, not `.` or `..`, not starting with
/// `-`. The name becomes a directory name and a command-line argument, so it must be neither a path
/// trick nor mistakable for an option.
pub fn validate_name(name: &str) -> Result<(), LaunchError> {
    let invalid = |reason| Err(LaunchError::InvalidName { name: name.to_owned(), reason });
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return invalid("it is longer than 64 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return invalid("only letters, digits, '.', '_' and '-' are allowed");
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are not names");
    }
    if name.starts_with('-') {
        return invalid("it must not start with '-'");
    }
    Ok(())
}

/// The cgroup directory of workload `name`: `<mount>/stance/<name>`.
pub fn cgroup_dir(mount: &Path, name: &str) -> PathBuf {
    mount.join(paths::LAUNCH_CGROUP_DIR).join(name)
}

/// Run `cmd` in workload `name`, forwarding SIGINT/SIGTERM/SIGHUP to it, and return the exit code
/// for `stance launch` itself: the command's own, or 128+N if signal N killed it (the shell's rule).
pub fn run(name: &str, cmd: &[OsString]) -> Result<u8, LaunchError> {
    validate_name(name)?;
    let (program, args) = cmd.split_first().ok_or(LaunchError::NoCommand)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(LaunchError::NotRoot);
    }
    let dir = cgroup_dir(&identity::cgroup2_mount()?, name);
    fs::create_dir_all(&dir).map_err(|source| LaunchError::CreateCgroup { path: dir.clone(), source })?;

    // Blocked before the spawn, so a signal that arrives before the wait loop stays pending and is
    // forwarded instead of killing launch and leaving the command running on its own.
    let signals = BlockedSignals::block().map_err(LaunchError::Signals)?;
    let mut child = spawn_in_cgroup(&dir, program, args, &signals)?;
    let status = wait_forwarding(&mut child, &signals)
        .map_err(|source| LaunchError::Wait { cmd: display(program), source })?;
    Ok(exit_code(status))
}

/// Spawn `program` so that it is in the cgroup `dir` before its first instruction. A child that
/// cannot join fails instead of running outside the workload. The child unblocks `signals`, which
/// the caller blocked for itself.
fn spawn_in_cgroup(
    dir: &Path,
    program: &OsStr,
    args: &[OsString],
    signals: &BlockedSignals,
) -> Result<Child, LaunchError> {
    let procs_path = dir.join("cgroup.procs");
    let join_error =
        |source| LaunchError::JoinCgroup { cmd: display(program), path: dir.to_path_buf(), source };
    // Opened here, where errors have context and allocation is allowed; the child only writes to it.
    // std opens it close-on-exec, so the command never inherits it.
    let procs = File::options().write(true).open(&procs_path).map_err(join_error)?;
    // The child writes a byte here when joining fails, so that failure is told apart from an exec
    // failure (both reach spawn's caller as a bare errno). Close-on-exec, like the file above.
    let (mut report_read, report_write) =
        io::pipe().map_err(|source| LaunchError::Spawn { cmd: display(program), source })?;
    let procs_fd = procs.as_raw_fd();
    let report_fd = report_write.as_raw_fd();
    let unblock = signals.set;

    let mut command = Command::new(program);
    command.args(args);
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe calls
    // are allowed: `join_cgroup` makes only sigprocmask and write calls, on a copied sigset and on two
    // descriptors this function keeps open until spawn has returned; it does not allocate or lock.
    unsafe {
        command.pre_exec(move || join_cgroup(procs_fd, report_fd, &unblock));
    }
    let spawned = command.spawn();
    // Our end must be closed for the read below to see end-of-file when the child did not report.
    drop(report_write);
    drop(procs);
    spawned.map_err(|source| {
        let mut flag = [0u8; 1];
        // spawn has reaped a child that failed, so its end is closed too and this cannot block for long.
        if matches!(report_read.read(&mut flag), Ok(1)) {
            join_error(source)
        } else {
            LaunchError::Spawn { cmd: display(program), source }
        }
    })
}

/// In the forked child: undo the parent's signal blocking and move this process into the cgroup
/// whose `cgroup.procs` is open as `procs_fd` ("0" means the writer). Async-signal-safe only.
fn join_cgroup(procs_fd: RawFd, report_fd: RawFd, unblock: &libc::sigset_t) -> io::Result<()> {
    // std resets the child's mask as well; doing it here keeps this correct whatever order std runs
    // it in, so the command never starts with launch's signals blocked.
    // SAFETY: `unblock` is an initialised set; sigprocmask is async-signal-safe.
    if unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, unblock, ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: procs_fd is open for writing (the parent holds it until spawn returns) and the buffer
    // is a one-byte static.
    let written = unsafe { libc::write(procs_fd, b"0".as_ptr().cast(), 1) };
    if written == 1 {
        return Ok(());
    }
    // Neither form allocates: an errno, or a plain I/O error code for a short write.
    let err = if written < 0 { io::Error::last_os_error() } else { io::Error::from_raw_os_error(libc::EIO) };
    // SAFETY: report_fd is the pipe's write end, open until spawn returns; a failed report only makes
    // the parent call this a spawn error.
    unsafe { libc::write(report_fd, b"j".as_ptr().cast(), 1) };
    Err(err)
}

/// Wait for the child, passing on forwarded signals as they arrive.
fn wait_forwarding(child: &mut Child, signals: &BlockedSignals) -> io::Result<ExitStatus> {
    let pid = libc::pid_t::try_from(child.id()).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        let Some(info) = signals.wait()? else { continue };
        if info.si_signo == libc::SIGCHLD || !should_forward(&info, pid) {
            continue;
        }
        // SAFETY: kill has no memory preconditions. The child is reaped only by try_wait above, in
        // this thread, so `pid` still names it (at worst as a zombie, where the signal is a no-op).
        unsafe { libc::kill(pid, info.si_signo) };
    }
}

/// Whether a signal launch received should be sent on to the child. A terminal's ^C is sent by the
/// kernel to the whole foreground process group, which the child shares unless it left it; sending
/// it again would make programs that treat a second ^C as "force quit" do so.
fn should_forward(info: &libc::siginfo_t, child: libc::pid_t) -> bool {
    if info.si_signo != libc::SIGINT || info.si_code != libc::SI_KERNEL {
        return true;
    }
    // SAFETY: getpgid and getpgrp have no memory preconditions.
    let (child_group, our_group) = unsafe { (libc::getpgid(child), libc::getpgrp()) };
    child_group != our_group
}

/// The exit code `stance launch` returns for the child's status.
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        // Exit codes are 0..=255 by construction; a signal number is below 65.
        (Some(code), _) => u8::try_from(code).unwrap_or(u8::MAX),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(u8::MAX),
        // wait reports only exits and deaths by signal; anything else is not a success.
        (None, None) => 1,
    }
}

fn display(program: &OsStr) -> String {
    program.to_string_lossy().into_owned()
}

/// The forwarded signals and SIGCHLD, blocked in the calling thread so that they queue for
/// `sigtimedwait` instead of running their default actions; the previous mask comes back on drop.
struct BlockedSignals {
    set: libc::sigset_t,
    previous: libc::sigset_t,
}

impl BlockedSignals {
    fn block() -> io::Result<Self> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        let mut previous = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises `set` before anything reads it, and pthread_sigmask
        // initialises `previous` when it returns 0 (checked before either is assumed initialised).
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            for sig in FORWARDED.into_iter().chain([libc::SIGCHLD]) {
                libc::sigaddset(set.as_mut_ptr(), sig);
            }
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, set.as_ptr(), previous.as_mut_ptr());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(BlockedSignals { set: set.assume_init(), previous: previous.assume_init() })
        }
    }

    /// One pending signal of the set, waiting up to `POLL`; None on timeout or interruption.
    fn wait(&self) -> io::Result<Option<libc::siginfo_t>> {
        self.wait_for(&POLL)
    }

    fn wait_for(&self, timeout: &libc::timespec) -> io::Result<Option<libc::siginfo_t>> {
        let mut info = MaybeUninit::<libc::siginfo_t>::uninit();
        // SAFETY: `set` is initialised, `info` is written by the kernel before a positive return,
        // and only read after one.
        let sig = unsafe { libc::sigtimedwait(&self.set, info.as_mut_ptr(), timeout) };
        if sig > 0 {
            // SAFETY: see above: a positive return means the kernel filled `info`.
            return Ok(Some(unsafe { info.assume_init() }));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN | libc::EINTR) => Ok(None),
            _ => Err(err),
        }
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        // The child is gone: signals still pending were meant for it, so they are discarded rather
        // than let loose on launch by the unblocking below.
        let now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        while matches!(self.wait_for(&now), Ok(Some(_))) {}
        // SAFETY: `previous` is the mask pthread_sigmask returned, so restoring it is valid.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, ptr::null_mut()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["web", "a", "my.app_v2-x", "A9", "..x", "x..", &"n".repeat(64)] {
            assert!(validate_name(ok).is_ok(), "{ok:?} should be valid");
        }
        for bad in ["", ".", "..", "-x", "a/b", "a b", "web\n", "café", "a:b", "/", &"n".repeat(65)] {
            assert!(
                matches!(validate_name(bad), Err(LaunchError::InvalidName { .. })),
                "{bad:?} should be invalid"
            );
        }
        let err = validate_name("a/b").unwrap_err().to_string();
        assert_eq!(err, "invalid workload name \"a/b\": only letters, digits, '.', '_' and '-' are allowed");
    }

    #[test]
    fn cgroup_dir_is_under_stance() {
        assert_eq!(
            cgroup_dir(Path::new("/sys/fs/cgroup"), "web"),
            PathBuf::from("/sys/fs/cgroup/stance/web")
        );
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
    }

    /// A test workload's cgroup, removed on drop (after the command has exited, so it is empty).
    struct TestWorkload {
        name: String,
    }

    impl TestWorkload {
        fn new(tag: &str) -> Self {
            TestWorkload { name: format!("t-launch-{}-{tag}", std::process::id()) }
        }
        fn dir(&self) -> PathBuf {
            cgroup_dir(&identity::cgroup2_mount().expect("cgroup2 mount"), &self.name)
        }
    }

    impl Drop for TestWorkload {
        fn drop(&mut self) {
            let _ = fs::remove_dir(self.dir());
        }
    }

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    // The tests below need root, as `stance launch` does; in this project tests run as root.

    #[test]
    fn runs_inside_the_cgroup_and_returns_the_exit_code() {
        let workload = TestWorkload::new("exit");
        let out = std::env::temp_dir().join(format!("{}.cgroup", workload.name));
        let script = format!("cat /proc/self/cgroup > {}; exit 7", out.display());
        let code = run(&workload.name, &os(&["/bin/sh", "-c", &script])).expect("launch");
        let cgroups = fs::read_to_string(&out).expect("child's /proc/self/cgroup");
        let _ = fs::remove_file(&out);
        assert_eq!(code, 7);
        let want = format!("0::/stance/{}", workload.name);
        assert!(cgroups.lines().any(|l| l == want), "{want:?} not in {cgroups:?}");
        assert!(workload.dir().is_dir(), "the cgroup is kept after the command exits");
    }

    #[test]
    fn missing_command_is_one_clear_error() {
        let workload = TestWorkload::new("missing");
        let err = run(&workload.name, &os(&["/nonexistent/stance-test-cmd"])).unwrap_err();
        match &err {
            LaunchError::Spawn { cmd, source } => {
                assert_eq!(cmd, "/nonexistent/stance-test-cmd");
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("expected a spawn error, got {other:?}"),
        }
        assert_eq!(err.to_string(), "cannot run /nonexistent/stance-test-cmd");
    }

    #[test]
    fn death_by_signal_is_128_plus_n() {
        let workload = TestWorkload::new("signal");
        assert_eq!(run(&workload.name, &os(&["/bin/sh", "-c", "kill -TERM $$"])).expect("launch"), 143);
    }

    #[test]
    fn forwards_sigterm_to_the_command() {
        let workload = TestWorkload::new("forward");
        let name = workload.name.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let launcher = std::thread::spawn(move || {
            // Blocked in this thread before its id is handed out, so the signal can only ever be
            // picked up by run's wait loop, never kill the test process.
            let _blocked = BlockedSignals::block().expect("block signals");
            // SAFETY: pthread_self has no preconditions.
            tx.send(unsafe { libc::pthread_self() }).expect("send thread id");
            run(&name, &os(&["/bin/sleep", "30"]))
        });
        let thread = rx.recv().expect("thread id");
        // SAFETY: the thread is alive: it has not returned before run, which is still sleeping.
        assert_eq!(unsafe { libc::pthread_kill(thread, libc::SIGTERM) }, 0);
        let started = std::time::Instant::now();
        let code = launcher.join().expect("launcher thread").expect("launch");
        assert_eq!(code, 143, "sleep should have been killed by the forwarded SIGTERM");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn failing_to_join_never_runs_the_command() {
        // Writes to /dev/full fail with ENOSPC, standing in for a cgroup that refuses the process.
        let marker = std::env::temp_dir().join(format!("stance-launch-join-{}", std::process::id()));
        let script = format!("touch {}", marker.display());
        let dir = tempdir_with_procs("/dev/full");
        let signals = BlockedSignals::block().expect("block signals");
        let err = spawn_in_cgroup(&dir, OsStr::new("/bin/sh"), &os(&["-c", &script]), &signals).unwrap_err();
        drop(signals);
        let _ = fs::remove_file(dir.join("cgroup.procs"));
        let _ = fs::remove_dir(&dir);
        match err {
            LaunchError::JoinCgroup { source, .. } => assert_eq!(source.raw_os_error(), Some(libc::ENOSPC)),
            other => panic!("expected a join error, got {other:?}"),
        }
        assert!(!marker.exists(), "the command ran although joining failed");
    }

    /// A directory whose `cgroup.procs` is a link to `target`.
    fn tempdir_with_procs(target: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("stance-launch-procs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        std::os::unix::fs::symlink(target, dir.join("cgroup.procs")).expect("symlink");
        dir
    }
}
