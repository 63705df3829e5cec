//! Root tier: the real observation programs on this machine's kernel. Loads the probes, runs real
//! programs, and checks what the kernel reported for them (filtered to our own children).

use std::{
    os::unix::{fs::MetadataExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use stance::probes::{
    decode::{decode, Body, Destination, Event},
    LoadOptions, Probes,
};

fn load() -> Probes {
    Probes::load(&LoadOptions {
        ringbuf_bytes: 4 << 20,
        dedup_window_ns: 0,
        argv_max: 256,
        wakeup_bytes: 0,
        self_tgid: 0,
    })
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
    // Capabilities: fexit, else BPF-LSM, else the cap_capable tracepoint (6.14+). A kernel with the
    // tracepoint must get an active family; one without any of the three must say why, not pretend.
    let caps = p.status.iter().find(|s| s.family == "capabilities").unwrap();
    eprintln!("{names:?}");
    if has_cap_tracepoint() {
        assert!(caps.is_active(), "{caps}");
    } else if !caps.is_active() {
        assert!(caps.to_string().starts_with("capabilities: unavailable: "), "{caps}");
    }
}

fn has_cap_tracepoint() -> bool {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .any(|t| Path::new(t).join("events/capability/cap_capable").exists())
}

#[test]
fn capability_checks_are_reported_with_their_result() {
    let mut p = load();
    let caps = p.status.iter().find(|s| s.family == "capabilities").unwrap();
    if !caps.is_active() {
        // Only a kernel without any usable hook may get here, and then it must have said why.
        assert!(!has_cap_tracepoint(), "{caps}");
        return;
    }
    // A raw socket needs CAP_NET_RAW (13), which root has: one granted check from the workload.
    let cg = TestCgroup::new("caps");
    let mut child =
        cg.spawn(Command::new("/usr/bin/python3").arg("-c").arg(
            "import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()",
        ));
    let events = collect(&mut p, cg.id, Duration::from_secs(10), |evs| {
        evs.iter().any(|e| matches!(e.body, Body::Capable { cap: 13, .. }))
    });
    assert!(child.wait().unwrap().success());
    let raw = events
        .iter()
        .find_map(|e| match e.body {
            Body::Capable { cap: 13, granted, .. } => Some(granted),
            _ => None,
        })
        .expect("no CAP_NET_RAW check reported for the raw socket");
    assert!(raw, "root's CAP_NET_RAW check must be reported as granted");
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

/// Runs a python snippet in a fresh cgroup and returns that cgroup's events once `done` holds.
fn python_in_cgroup(p: &mut Probes, tag: &str, code: &str, done: impl FnMut(&[Event]) -> bool) -> Vec<Event> {
    let cg = TestCgroup::new(tag);
    let mut child = cg.spawn(Command::new("/usr/bin/python3").arg("-c").arg(code));
    let events = collect(p, cg.id, Duration::from_secs(10), done);
    let status = child.wait().unwrap();
    assert!(status.success(), "python snippet failed: {status}");
    events
}

#[test]
fn fexecve_and_memfd_exec_report_the_kernel_file() {
    let mut p = load();
    // fexecve of /bin/true through an fd, then a memfd holding a copy of /bin/true.
    let code = r#"
import os
pid = os.fork()
if pid == 0:
    fd = os.open("/bin/true", os.O_RDONLY)
    os.execve(fd, ["true"], {})
os.waitpid(pid, 0)
pid = os.fork()
if pid == 0:
    m = os.memfd_create("stance-test", 0)
    os.write(m, open("/bin/true", "rb").read())
    os.execve(m, ["memtrue"], {})
os.waitpid(pid, 0)
"#;
    let events = python_in_cgroup(&mut p, "memfd", code, |evs| {
        evs.iter().filter(|e| matches!(e.body, Body::Exec { .. })).count() >= 3
    });
    let execs: Vec<(String, bool)> = events
        .iter()
        .filter_map(|e| match &e.body {
            Body::Exec { path, anonymous, .. } => Some((path.clone(), *anonymous)),
            _ => None,
        })
        .collect();
    assert!(execs.contains(&("/usr/bin/true".to_owned(), false)), "fexecve shows the real binary: {execs:?}");
    assert!(
        execs.iter().any(|(p, anon)| *anon && p.contains("memfd:stance-test")),
        "memfd exec is flagged anonymous with its memfd name: {execs:?}"
    );
}

#[test]
fn ipv6_mapped_and_unix_destinations() {
    let mut p = load();
    let tmp = std::env::temp_dir().join(format!("stance-unix-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let code = format!(
        r#"
import os, socket
l6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM); l6.bind(("::1", 0)); l6.listen()
c = socket.socket(socket.AF_INET6, socket.SOCK_STREAM); c.connect(("::1", l6.getsockname()[1])); c.close()
l4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM); l4.bind(("127.0.0.1", 0)); l4.listen()
c = socket.socket(socket.AF_INET6, socket.SOCK_STREAM); c.connect(("::ffff:127.0.0.1", l4.getsockname()[1])); c.close()
os.chdir("{dir}")
u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); u.bind("rel.sock"); u.listen()
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.connect("rel.sock"); c.close()
a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); a.bind("\0stance-abstract")
c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); c.sendto(b"x", "\0stance-abstract"); c.close()
print(l6.getsockname()[1], l4.getsockname()[1])
"#,
        dir = tmp.display()
    );
    let events = python_in_cgroup(&mut p, "net", &code, |evs| {
        evs.iter().filter(|e| matches!(e.body, Body::Connect { .. })).count() >= 4
    });
    let dests: Vec<(Destination, bool)> = events
        .iter()
        .filter_map(|e| match &e.body {
            Body::Connect { dest, send, .. } => Some((dest.clone(), *send)),
            _ => None,
        })
        .collect();
    eprintln!("{dests:?}");
    assert!(dests
        .iter()
        .any(|(d, _)| matches!(d, Destination::Inet { addr, .. } if addr.to_string() == "::1")));
    assert!(
        dests
            .iter()
            .any(|(d, _)| matches!(d, Destination::Inet { addr, .. } if addr.to_string() == "127.0.0.1")),
        "IPv4-mapped connect is normalised to IPv4"
    );
    let sock = tmp.join("rel.sock").to_string_lossy().into_owned();
    assert!(
        dests.iter().any(|(d, _)| *d == Destination::UnixPath(sock.clone())),
        "relative unix path made absolute"
    );
    assert!(dests.contains(&(Destination::UnixAbstract("stance-abstract".to_owned()), true)));
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn the_daemons_own_activity_is_not_observed() {
    let mut p = Probes::load(&LoadOptions {
        ringbuf_bytes: 1 << 20,
        dedup_window_ns: 0,
        argv_max: 64,
        wakeup_bytes: 0,
        self_tgid: std::process::id(),
    })
    .unwrap();
    let mut rb = p.take_ringbuf().unwrap();
    let marker = std::env::temp_dir().join(format!("stance-self-{}", std::process::id()));
    std::fs::write(&marker, "x").unwrap();
    for _ in 0..5 {
        let _ = std::fs::read(&marker).unwrap();
    }
    // A child is another process: it must be seen, which proves the probes were live.
    let st = Command::new("/bin/cat").arg(&marker).output().unwrap();
    assert!(st.status.success());
    std::thread::sleep(Duration::from_millis(300));
    let me = std::process::id();
    let (mut own, mut child_saw) = (0, false);
    let m = marker.to_string_lossy().into_owned();
    while let Some(item) = rb.next() {
        let ev = decode(&item).unwrap();
        if let Body::Open { path, .. } = &ev.body {
            if *path == m {
                if ev.tgid == me {
                    own += 1;
                } else {
                    child_saw = true;
                }
            }
        }
    }
    assert!(child_saw, "the child's open of the marker was not seen");
    assert_eq!(own, 0, "the daemon's own opens were reported");
    std::fs::remove_file(&marker).unwrap();
}
