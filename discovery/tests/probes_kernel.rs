//! Root tier: the real observation programs on this machine's kernel. Loads the probes, runs real
//! programs, and checks what the kernel reported for them (filtered to our own children).

use std::{
    os::unix::{fs::MetadataExt, process::CommandExt},
    path::PathBuf,
    process::{Child, Command},
    time::{Duration, Instant},
};

use stance::probes::{
    decode::{decode, Body, Destination, Event},
    LoadOptions, Probes,
};

fn load() -> Probes {
    Probes::load(&LoadOptions { ringbuf_bytes: 4 << 20, dedup_window_ns: 0, argv_max: 256, self_tgid: 0 })
        .expect("probes load on this kernel")
}

/// A fresh cgroup under the cgroup2 mount; events are filtered to it.
struct TestCgroup {
    dir: PathBuf,
    id: u64,
}

impl TestCgroup {
    fn new(name: &str) -> TestCgroup {
        let mount = stance::identity::cgroup2_mount().unwrap();
        let dir = mount.join(format!("stance-test-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let id = std::fs::metadata(&dir).unwrap().ino();
        TestCgroup { dir, id }
    }

    /// Spawns `cmd` so that it is inside the cgroup before its first instruction.
    fn spawn(&self, cmd: &mut Command) -> Child {
        let procs = std::ffi::CString::new(self.dir.join("cgroup.procs").to_str().unwrap()).unwrap();
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
        cmd.spawn().unwrap()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Collects events of one cgroup until `done` says so or the timeout passes.
fn collect(
    p: &mut Probes,
    cgroup_id: u64,
    timeout: Duration,
    mut done: impl FnMut(&[Event]) -> bool,
) -> Vec<Event> {
    let mut rb = p.take_ringbuf().unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    while start.elapsed() < timeout {
        while let Some(item) = rb.next() {
            let ev = decode(&item).expect("decodes");
            if ev.cgroup_id == cgroup_id {
                out.push(ev);
            }
        }
        if done(&out) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    out
}

#[test]
fn families_attach_and_report() {
    let p = load();
    let names: Vec<String> = p.status.iter().map(|s| s.to_string()).collect();
    for fam in ["exec", "file opens", "network", "process lifecycle", "cgroups"] {
        let st = p.status.iter().find(|s| s.family == fam).unwrap();
        assert!(st.is_active() && st.failed.is_empty(), "{names:?}");
    }
    // This machine refuses fexit and LSM programs: capabilities must say why, not pretend.
    let caps = p.status.iter().find(|s| s.family == "capabilities").unwrap();
    eprintln!("{names:?}");
    if !caps.is_active() {
        assert!(caps.to_string().starts_with("capabilities: unavailable: "), "{caps}");
    }
}

#[test]
fn open_exec_connect_are_reported_with_kernel_paths() {
    let mut p = load();
    let dir = std::env::temp_dir().join(format!("stance-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("target.txt"), "x").unwrap();
    let _ = std::fs::remove_file(dir.join("link"));
    std::os::unix::fs::symlink(dir.join("target.txt"), dir.join("link")).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "cd {d} && cat ./target.txt link > /dev/null; cat {d}/missing 2>/dev/null; exec 3<>/dev/tcp/127.0.0.1/{port}; true",
        d = dir.display()
    );
    let cg = TestCgroup::new("open");
    let mut child = cg.spawn(Command::new("/bin/bash").arg("-c").arg(&script));
    let events = collect(&mut p, cg.id, Duration::from_secs(10), |evs| {
        evs.iter().any(|e| matches!(e.body, Body::Connect { .. }))
    });
    child.wait().unwrap();
    let target = dir.join("target.txt").to_string_lossy().into_owned();
    let opens: Vec<(&str, i32)> = events
        .iter()
        .filter_map(|e| match &e.body {
            Body::Open { path, .. } => Some((path.as_str(), e.ret)),
            _ => None,
        })
        .collect();
    let execs: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.body {
            Body::Exec { path, .. } => Some(path.as_str()),
            _ => None,
        })
        .collect();
    eprintln!("opens: {opens:?}\nexecs: {execs:?}");
    assert!(
        opens.iter().any(|(p, r)| *p == target && *r == 0),
        "relative and symlink opens resolve to {target}"
    );
    assert!(!opens.iter().any(|(p, _)| p.ends_with("/link") || *p == "./target.txt"));
    let missing = format!("{}/missing", dir.display());
    assert!(opens.iter().any(|(p, r)| *p == missing && *r == -2), "failed open reported with ENOENT");
    assert!(execs.iter().any(|p| p.ends_with("/bash")), "{execs:?}");
    assert!(execs.iter().any(|p| p.ends_with("/cat")), "{execs:?}");
    let connect = events.iter().find_map(|e| match &e.body {
        Body::Connect { dest: Destination::Inet { addr, port: p }, .. } => Some((addr.to_string(), *p)),
        _ => None,
    });
    assert_eq!(connect, Some(("127.0.0.1".to_owned(), port)));
    drop(listener);
    std::fs::remove_dir_all(&dir).unwrap();
}
