//! Root tier: the real observation programs on this machine's kernel. Loads the probes, runs real
//! programs, and checks what the kernel reported for them (filtered to our own children).

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use stance::probes::{
    decode::{decode, Body, Destination, Event},
    LoadOptions, LossCounters, Probes,
};

mod common;

use common::TestCgroup;

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

/// The probes with their ring buffer and loss counters taken out, for tests that run workloads.
struct Watch {
    _probes: Probes,
    rb: RingBuf<MapData>,
    losses: LossCounters,
}

impl Watch {
    fn new(mut probes: Probes) -> Watch {
        let rb = probes.take_ringbuf().unwrap();
        let losses = probes.take_loss_counters().unwrap();
        Watch { _probes: probes, rb, losses }
    }

    /// Events the kernel counted as lost for a cgroup (ring full, or a read that failed).
    fn lost(&self, cgroup_id: u64) -> u64 {
        let (per, _) = self.losses.snapshot();
        per.iter().filter(|(id, _)| *id == cgroup_id).flat_map(|(_, c)| c.iter()).sum()
    }

    /// Collects the events `keep` selects until `done` says so or the timeout passes.
    fn collect(
        &mut self,
        timeout: Duration,
        keep: impl Fn(&Event) -> bool,
        mut done: impl FnMut(&[Event]) -> bool,
    ) -> Vec<Event> {
        let start = Instant::now();
        let mut out = Vec::new();
        loop {
            while let Some(item) = self.rb.next() {
                let ev = decode(&item).expect("decodes");
                if keep(&ev) {
                    out.push(ev);
                }
            }
            if done(&out) || start.elapsed() >= timeout {
                return out;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `cmd` in a fresh cgroup and returns that cgroup's events once `done` holds (or after
    /// 10 s). Every tracepoint sees the whole host, so on a busy machine the ring can fill: when
    /// the kernel counted a loss for the workload's cgroup the run says so and is repeated in a new
    /// cgroup (up to three times). An event missing without a counted loss is a real failure.
    fn run(
        &mut self,
        tag: &str,
        cmd: impl Fn() -> Command,
        also: impl Fn(&Event) -> bool,
        mut done: impl FnMut(&[Event]) -> bool,
    ) -> Vec<Event> {
        for attempt in 1..=3 {
            let cg = TestCgroup::new(tag);
            let mut child = cg.spawn(&mut cmd());
            let id = cg.id;
            let events = self.collect(Duration::from_secs(10), |e| e.cgroup_id == id || also(e), &mut done);
            let status = child.wait().unwrap();
            assert!(status.success(), "{tag}: workload failed: {status}");
            // The child has exited: anything it did is in the ring or counted as lost by now.
            let events = {
                let mut events = events;
                events.extend(self.collect(Duration::ZERO, |e| e.cgroup_id == id || also(e), |_| true));
                events
            };
            let lost = self.lost(id);
            if lost == 0 || attempt == 3 {
                assert_eq!(lost, 0, "{tag}: the kernel lost {lost} events of the workload on every attempt");
                return events;
            }
            eprintln!("{tag}: attempt {attempt}: the kernel counted {lost} lost events (busy host); running it again");
        }
        unreachable!()
    }
}

#[test]
fn families_attach_and_report() {
    let p = load();
    let names: Vec<String> = p.status.iter().map(|s| s.to_string()).collect();
    for fam in ["exec", "file opens", "file name changes", "network", "process lifecycle", "cgroups"] {
        let st = p.status.iter().find(|s| s.family == fam).unwrap();
        assert!(st.is_active() && st.failed.is_empty(), "{names:?}");
    }
    // Opens, name changes and network calls: through fexit where the kernel loads it, else through
    // the syscall tracepoints, never both; the report names the hook, and says why fexit was passed
    // over.
    for fam in ["file opens", "file name changes", "network"] {
        let st = p.status.iter().find(|s| s.family == fam).unwrap();
        match st.hook {
            Some(h) if h.starts_with("fexit") => {
                assert!(st.attached.iter().all(|p| p.starts_with("stance_fx_")), "{st:?}")
            }
            Some("syscall tracepoints") => {
                assert!(st.attached.iter().all(|p| p.starts_with("stance_exit_")), "{st:?}");
                assert!(!st.passed_over.is_empty(), "fexit refused without a reason: {st:?}");
            }
            other => panic!("{fam}: unexpected hook {other:?}"),
        }
        assert_eq!(st.to_string(), format!("{fam}: active ({})", st.hook.unwrap()));
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
    let p = load();
    let caps = p.status.iter().find(|s| s.family == "capabilities").unwrap();
    if !caps.is_active() {
        // Only a kernel without any usable hook may get here, and then it must have said why.
        assert!(!has_cap_tracepoint(), "{caps}");
        return;
    }
    // A raw socket needs CAP_NET_RAW (13), which root has: one granted check from the workload.
    let mut w = Watch::new(p);
    let events = w.run(
        "caps",
        || {
            let mut c = Command::new("/usr/bin/python3");
            c.arg("-c").arg(
                "import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()",
            );
            c
        },
        |_| false,
        |evs| evs.iter().any(|e| matches!(e.body, Body::Capable { cap: 13, .. })),
    );
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
    let mut w = Watch::new(load());
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
    let events = w.run(
        "open",
        || {
            let mut c = Command::new("/bin/bash");
            c.arg("-c").arg(&script);
            c
        },
        |_| false,
        |evs| evs.iter().any(|e| matches!(e.body, Body::Connect { .. })),
    );
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
fn python_in_cgroup(w: &mut Watch, tag: &str, code: &str, done: impl FnMut(&[Event]) -> bool) -> Vec<Event> {
    w.run(
        tag,
        || {
            let mut c = Command::new("/usr/bin/python3");
            c.arg("-c").arg(code);
            c
        },
        |_| false,
        done,
    )
}

#[test]
fn fexecve_and_memfd_exec_report_the_kernel_file() {
    let mut w = Watch::new(load());
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
    let events = python_in_cgroup(&mut w, "memfd", code, |evs| {
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
    let mut w = Watch::new(load());
    let tmp = std::env::temp_dir().join(format!("stance-unix-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let code = format!(
        r#"
import os, socket
l6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM); l6.bind(("::1", 0)); l6.listen()
c = socket.socket(socket.AF_INET6, socket.SOCK_STREAM); c.connect(("::1", l6.getsockname()[1])); c.close()
l4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM); l4.bind(("127.0.0.1", 0)); l4.listen()
c = socket.socket(socket.AF_INET6, socket.SOCK_STREAM); c.connect(("::ffff:127.0.0.1", l4.getsockname()[1])); c.close()
# TCP Fast Open: a send with MSG_FASTOPEN connects, past the kernel's connect path.
l3 = socket.socket(socket.AF_INET, socket.SOCK_STREAM); l3.bind(("127.0.0.3", 0)); l3.listen()
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM); t.sendto(b"x", socket.MSG_FASTOPEN, l3.getsockname()); t.close()
os.chdir("{dir}")
u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); u.bind("rel.sock"); u.listen()
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.connect("rel.sock"); c.close()
a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); a.bind("\0stance-abstract")
c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); c.sendto(b"x", "\0stance-abstract"); c.close()
# Through symlinks, as /dev/log and /var/run/... are: a stream socket's name, and a datagram
# socket's directory.
os.symlink("rel.sock", "link.sock")
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.connect("link.sock"); c.close()
os.mkdir("real"); os.symlink("real", "via")
d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); d.bind("real/dg.sock")
c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); c.connect("{dir}/via/dg.sock"); c.send(b"x"); c.close()
print(l6.getsockname()[1], l4.getsockname()[1])
"#,
        dir = tmp.display()
    );
    let events = python_in_cgroup(&mut w, "net", &code, |evs| {
        evs.iter().filter(|e| matches!(e.body, Body::Connect { .. })).count() >= 7
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
    assert!(
        dests
            .iter()
            .any(|(d, send)| matches!(d, Destination::Inet { addr, .. } if addr.to_string() == "127.0.0.3")
                && !send),
        "a TCP Fast Open send is the connect it makes"
    );
    let sock = tmp.join("rel.sock").to_string_lossy().into_owned();
    assert!(
        dests.iter().any(|(d, _)| *d == Destination::UnixPath(sock.clone())),
        "relative unix path made absolute"
    );
    assert!(dests.contains(&(Destination::UnixAbstract("stance-abstract".to_owned()), true)));
    // A connect that reached a peer names the path the peer is bound to, which is what enforcement
    // matches; never the symlink the caller used.
    let dg = tmp.join("real/dg.sock").to_string_lossy().into_owned();
    assert!(
        dests.contains(&(Destination::UnixPath(dg), false)),
        "datagram connect through a symlinked directory"
    );
    let unix: Vec<&Destination> =
        dests.iter().map(|(d, _)| d).filter(|d| matches!(d, Destination::UnixPath(_))).collect();
    assert_eq!(unix.iter().filter(|d| ***d == Destination::UnixPath(sock.clone())).count(), 2, "{unix:?}");
    assert!(
        !unix
            .iter()
            .any(|d| matches!(d, Destination::UnixPath(p) if p.contains("link.sock") || p.contains("/via/"))),
        "a symlink path became the destination: {unix:?}"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// Every message of a sendmmsg names its own destination, and enforcement decides each one: each
/// message the kernel sent is recorded, not only the first. The kernel reports an error only when
/// the first message failed (then that one is recorded with it); a later failure ends the call
/// with the count sent so far, and the failed message is not seen.
#[test]
fn sendmmsg_records_every_destination_sent() {
    let mut w = Watch::new(load());
    let code = r#"
import ctypes, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
class msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(iovec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]
class mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint)]
assert ctypes.sizeof(mmsghdr) == 64
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
buf = ctypes.create_string_buffer(b"x")
iov = iovec(ctypes.cast(buf, ctypes.c_void_p), 1)
def sendmmsg(dests):
    names = [ctypes.create_string_buffer(struct.pack("=H", socket.AF_INET) + struct.pack("!H", p)
                                         + socket.inet_aton(a) + bytes(8), 16) for a, p in dests]
    msgs = (mmsghdr * len(dests))()
    for m, n in zip(msgs, names):
        m.hdr.name = ctypes.cast(n, ctypes.c_void_p); m.hdr.namelen = 16
        m.hdr.iov = ctypes.pointer(iov); m.hdr.iovlen = 1
    r = libc.sendmmsg(s.fileno(), msgs, len(dests), 0)
    return r if r >= 0 else -ctypes.get_errno()
# Four messages, three destinations: all sent.
assert sendmmsg([("127.0.0.4", 9), ("127.0.0.5", 9), ("127.0.0.6", 9), ("127.0.0.4", 9)]) == 4
# The second message fails (port 0): one sent, no error.
assert sendmmsg([("127.0.0.7", 9), ("127.0.0.8", 0)]) == 1
# The first fails: the call's error.
r = sendmmsg([("127.0.0.9", 0), ("127.0.0.10", 9)])
assert r < 0, r
print("done")
"#;
    let sends = |evs: &[Event]| {
        evs.iter()
            .filter_map(|e| match &e.body {
                Body::Connect { dest: Destination::Inet { addr, port }, send: true, .. } => {
                    Some((addr.to_string(), *port, e.ret))
                }
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let events =
        python_in_cgroup(&mut w, "mmsg", code, |evs| sends(evs).iter().any(|(a, _, _)| a == "127.0.0.9"));
    let got = sends(&events);
    eprintln!("{got:?}");
    let of = |a: &str| got.iter().filter(|(addr, _, _)| addr == a).collect::<Vec<_>>();
    // Dedup is off in these tests: every message that went out is a record.
    assert_eq!(of("127.0.0.4").len(), 2, "{got:?}");
    for a in ["127.0.0.5", "127.0.0.6", "127.0.0.7"] {
        assert_eq!(of(a), vec![&(a.to_owned(), 9, 0)], "{a} in {got:?}");
    }
    assert!(of("127.0.0.8").is_empty(), "a message the kernel did not send was recorded: {got:?}");
    assert!(of("127.0.0.10").is_empty(), "a message after a failed first was recorded: {got:?}");
    let failed = of("127.0.0.9");
    assert_eq!(failed.len(), 1, "{got:?}");
    assert!(failed[0].2 < 0, "the failed first message carries the call's errno: {got:?}");
}

#[test]
fn the_daemons_own_activity_is_not_observed() {
    let me = std::process::id();
    let mut w = Watch::new(
        Probes::load(&LoadOptions {
            ringbuf_bytes: 4 << 20,
            dedup_window_ns: 0,
            argv_max: 64,
            wakeup_bytes: 0,
            self_tgid: me,
        })
        .unwrap(),
    );
    let marker = std::env::temp_dir().join(format!("stance-self-{me}"));
    std::fs::write(&marker, "x").unwrap();
    let m = marker.to_string_lossy().into_owned();
    let opens_marker = |e: &Event| matches!(&e.body, Body::Open { path, .. } if *path == m);
    let own_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    for _ in 0..5 {
        let _ = std::fs::read(&marker).unwrap();
    }
    // A child is another process: it must be seen, which proves the probes were live.
    let events = w.run(
        "self",
        || {
            let mut c = Command::new("/bin/cat");
            c.arg(&marker).stdout(std::process::Stdio::null());
            c
        },
        |e| e.tgid == me && opens_marker(e),
        |evs| evs.iter().any(|e| e.tgid != me && opens_marker(e)),
    );
    assert!(
        events.iter().any(|e| e.tgid != me && opens_marker(e)),
        "the child's open of the marker was not seen"
    );
    let own = events.iter().filter(|e| e.tgid == me).count();
    assert_eq!(own, 0, "the daemon's own opens were reported (test runs in {own_cgroup})");
    std::fs::remove_file(&marker).unwrap();
}
