//! Shared by the root integration tests: start the real daemon on a temp database, run workloads
//! under `stance launch`, query with the real CLI, stop the daemon by its pid.

#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::Duration,
};

pub const STANCE: &str = env!("CARGO_BIN_EXE_stance");

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("stance-{tag}-{}-{}", std::process::id(), nanos()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// A unique workload name for this test run.
pub fn workload(tag: &str) -> String {
    format!("t-{tag}-{}", std::process::id())
}

/// `stance launch` leaves a workload's cgroup in place when its command exits (a re-launch then
/// starts inside the same cgroup, enforced from its first instruction if the workload is). The
/// tests' workloads are named by the test process's pid (`workload`): the empty cgroups of test
/// processes that are gone are removed, once per test process, so runs do not pile them up.
fn remove_dead_test_workloads() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(mount) = stance::identity::cgroup2_mount() else { return };
        let Ok(entries) = std::fs::read_dir(mount.join("stance")) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix("t-").and_then(|n| n.rsplit('-').next()) else { continue };
            if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                // Fails with EBUSY if something still runs in it: then it stays.
                let _ = std::fs::remove_dir(entry.path());
            }
        }
    });
}

pub struct Daemon {
    pub child: Child,
    pub db: PathBuf,
    pub stdout: Vec<String>,
    lines: mpsc::Receiver<String>,
    /// This daemon's bpffs pin directory, removed on drop.
    pin_dir: PathBuf,
}

impl Daemon {
    /// Starts `stance run` with the given TOML config and waits until it is observing.
    pub fn start(dir: &Path, config: &str) -> Daemon {
        let (mut cmd, db, pin_dir) = Daemon::command(dir, config);
        let mut child =
            cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start stance run");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                eprintln!("[daemon] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut d = Daemon { child, db, stdout: Vec::new(), lines: rx, pin_dir };
        d.wait_for_line("stance: writing to", Duration::from_secs(60));
        d
    }

    /// The `stance run` command for a test daemon in `dir` (its database, config, control socket,
    /// API port and pin directory of its own), with the database's and pin directory's paths.
    pub fn command(dir: &Path, config: &str) -> (Command, PathBuf, PathBuf) {
        remove_dead_test_workloads();
        let db = dir.join("stance.db");
        let cfg = dir.join("stance.toml");
        // Each test daemon gets its own control socket, so tests running side by side never meet.
        let mut config = config.to_owned();
        if !config.contains("control_socket") {
            config.push_str(&format!("control_socket = \"{}\"\n", dir.join("control.sock").display()));
        }
        // Its own API port (chosen by the kernel; the daemon prints it), for the same reason.
        if !config.contains("listen") {
            config.push_str("listen = \"127.0.0.1:0\"\n");
        }
        // Its own pinned enforcement state too (removed when the test is done: unpinning detaches).
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/stance-test-{}-{}", std::process::id(), nanos()));
        config.push_str(&format!("pin_dir = \"{}\"\n", pin_dir.display()));
        std::fs::write(&cfg, config).unwrap();
        let mut cmd = Command::new(STANCE);
        cmd.args(["run", "--db"]).arg(&db).arg("--config").arg(&cfg);
        (cmd, db, pin_dir)
    }

    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(l) = self.stdout.iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.stdout.push(l),
                Err(_) => {
                    let status = self.child.try_wait().unwrap();
                    panic!("daemon never printed {needle:?} (status {status:?}); output: {:#?}", self.stdout);
                }
            }
        }
    }

    /// The API's URL and token, from the daemon's start-up line.
    pub fn api(&mut self) -> (String, String) {
        let line = self.wait_for_line("  api: listening on ", Duration::from_secs(5));
        let rest = line.trim_start().trim_start_matches("api: listening on ");
        let (url, tail) = rest.split_once(" (token in ").expect("api line");
        let token = std::fs::read_to_string(tail.trim_end_matches(')')).expect("token file");
        (url.to_owned(), token.trim().to_owned())
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM by pid and wait; returns the exit status code.
    pub fn stop(mut self) -> (i32, Vec<String>) {
        // SAFETY: kill on the pid of the child this test started.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.stdout.push(l);
        }
        (status.code().unwrap_or(-1), std::mem::take(&mut self.stdout))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: kill on the pid of the child this test started.
            unsafe { libc::kill(self.pid(), libc::SIGKILL) };
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

pub fn stance(args: &[&str]) -> Output {
    Command::new(STANCE).args(args).output().expect("run stance")
}

/// Runs a stance query and parses its JSON output.
pub fn stance_json(args: &[&str]) -> serde_json::Value {
    let out = stance(args);
    assert!(out.status.success(), "stance {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("stance {args:?}: bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
    })
}

/// Polls `stance graph` until `pred` holds (the daemon flushes on an interval).
pub fn wait_graph(
    db: &Path,
    workload: &str,
    timeout: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + timeout;
    let db = db.to_str().unwrap();
    loop {
        let out = stance(&["graph", workload, "--db", db, "-o", "json"]);
        if out.status.success() {
            let g: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if pred(&g) || std::time::Instant::now() > deadline {
                return g;
            }
        } else if std::time::Instant::now() > deadline {
            panic!("stance graph {workload}: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Labels of a graph's nodes of one kind.
pub fn labels(g: &serde_json::Value, kind: &str) -> Vec<String> {
    g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == kind)
        .map(|n| n["label"].as_str().unwrap().to_owned())
        .collect()
}

/// The edges whose target has this label.
pub fn edges_to<'a>(g: &'a serde_json::Value, label: &str) -> Vec<&'a serde_json::Value> {
    g["edges"].as_array().unwrap().iter().filter(|e| e["target_label"] == label).collect()
}

/// A fresh cgroup under the cgroup2 mount, removed (with any child cgroups a test made in it) on drop.
/// Each one gets its own name, so a retried run never shares a cgroup id with the one before it.
pub struct TestCgroup {
    pub dir: PathBuf,
    pub id: u64,
}

impl TestCgroup {
    pub fn new(tag: &str) -> TestCgroup {
        let mount = stance::identity::cgroup2_mount().unwrap();
        let dir = mount.join(format!("stance-test-{tag}-{}-{}", std::process::id(), nanos()));
        std::fs::create_dir_all(&dir).unwrap();
        let id = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&dir).unwrap());
        TestCgroup { dir, id }
    }

    /// Spawns `cmd` so that it is inside the cgroup before its first instruction.
    pub fn spawn(&self, cmd: &mut Command) -> Child {
        enter_cgroup_on_exec(cmd, &self.dir);
        cmd.spawn().unwrap()
    }
}

/// Makes `cmd` join the cgroup at `dir` between fork and exec, so its first instruction runs there.
pub fn enter_cgroup_on_exec(cmd: &mut Command, dir: &Path) {
    use std::os::unix::process::CommandExt;
    let procs = std::ffi::CString::new(dir.join("cgroup.procs").to_str().unwrap()).unwrap();
    // SAFETY: only async-signal-safe calls (open, write, close) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        })
    };
}

/// cgroupfs directories go with rmdir only (their files cannot be unlinked), children first.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.dir);
    }
}
