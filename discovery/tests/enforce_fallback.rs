//! Root tier, on this machine's kernel, where BPF-LSM programs cannot load: the enforcer says so per
//! domain, and network enforcement falls back to cgroup connect/sendmsg programs on the cgroup2 root.
//! A cgroup made by the test is put into network enforce with one loopback port allowed; connects and
//! datagrams from inside it are decided, the same ones from outside are not, verdicts come back, and
//! the pinned programs keep enforcing when the enforcer is gone and are adopted by the next one.
//!
//! Each test pins under its own directory (never /sys/fs/bpf/stance) and removes it at the end.

use std::{
    collections::BTreeSet,
    net::{TcpListener, UdpSocket},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

mod common;

use common::TestCgroup;
use stance::enforce::{
    pin::PinLayout,
    policy::{NetRule, Policy},
    verdict::{self, Verdict},
    Backend, Domain, Enforcer, Mode, Modes, StartOptions,
};

/// Unpins everything a test pinned, even when it panics.
struct PinGuard(PathBuf);

impl Drop for PinGuard {
    fn drop(&mut self) {
        let _ = PinLayout::new(&self.0).remove_all();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn options(name: &str) -> (StartOptions, PinGuard) {
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/stance-test-{name}-{}", std::process::id()));
    let mut opts = StartOptions::new(std::process::id(), stance::identity::cgroup2_mount().unwrap());
    opts.pin_dir = pin_dir.clone();
    opts.verdict_window = Duration::ZERO;
    (opts, PinGuard(pin_dir))
}

/// Tries each network action and prints `name result` per line (result `ok` or the errno name).
const PROBE: &str = r#"
import errno, socket, sys
tcp_ok, tcp_denied, udp_ok = (int(a) for a in sys.argv[1:4])
def attempt(name, fn):
    try:
        fn()
        print(name, "ok")
    except OSError as e:
        print(name, errno.errorcode.get(e.errno, e.errno))
def tcp(family, host, port):
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.connect((host, port))
    finally:
        s.close()
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(b"x", ("127.0.0.1", port))
    finally:
        s.close()
attempt("tcp-allowed", lambda: tcp(socket.AF_INET, "127.0.0.1", tcp_ok))
attempt("tcp-denied", lambda: tcp(socket.AF_INET, "127.0.0.1", tcp_denied))
attempt("mapped-allowed", lambda: tcp(socket.AF_INET6, "::ffff:127.0.0.1", tcp_ok))
attempt("mapped-denied", lambda: tcp(socket.AF_INET6, "::ffff:127.0.0.1", tcp_denied))
attempt("udp-allowed", lambda: udp(udp_ok))
attempt("udp-denied", lambda: udp(tcp_denied))
"#;

struct Ports {
    _tcp_ok: TcpListener,
    _tcp_denied: TcpListener,
    _udp: UdpSocket,
    tcp_ok: u16,
    tcp_denied: u16,
    udp_ok: u16,
}

impl Ports {
    fn new() -> Ports {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = TcpListener::bind("127.0.0.1:0").unwrap();
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (tcp_ok, tcp_denied, udp_ok) =
            (a.local_addr().unwrap().port(), b.local_addr().unwrap().port(), u.local_addr().unwrap().port());
        Ports { _tcp_ok: a, _tcp_denied: b, _udp: u, tcp_ok, tcp_denied, udp_ok }
    }

    fn policy(&self) -> Policy {
        let rule = |port, proto: &str| NetRule {
            net: "127.0.0.1/32".parse().unwrap(),
            port_lo: port,
            port_hi: port,
            protocol: Some(proto.into()),
        };
        Policy { network: vec![rule(self.tcp_ok, "tcp"), rule(self.udp_ok, "udp")], ..Default::default() }
    }

    /// Runs the probe, inside `cgroup` when given; returns name → result.
    fn probe(&self, cgroup: Option<&Path>) -> std::collections::BTreeMap<String, String> {
        let mut cmd = Command::new("python3");
        cmd.arg("-c")
            .arg(PROBE)
            .arg(self.tcp_ok.to_string())
            .arg(self.tcp_denied.to_string())
            .arg(self.udp_ok.to_string());
        if let Some(dir) = cgroup {
            common::enter_cgroup_on_exec(&mut cmd, dir);
        }
        let out = cmd.output().expect("python3 runs");
        assert!(out.status.success(), "probe failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect()
    }
}

fn expect(results: &std::collections::BTreeMap<String, String>, name: &str, want: &str) {
    assert_eq!(results.get(name).map(String::as_str), Some(want), "{name}: {results:?}");
}

/// One network rule more than the kernel map holds.
fn too_many_network_rules() -> Policy {
    Policy {
        network: (0..=8192u32)
            .map(|i| NetRule {
                net: format!("10.{}.{}.0/24", i / 256, i % 256).parse().unwrap(),
                port_lo: 1,
                port_hi: 1,
                protocol: None,
            })
            .collect(),
        ..Default::default()
    }
}

fn network_modes() -> Modes {
    Modes { network: Mode::Enforce, ..Default::default() }
}

/// Verdicts of `policy_id` until `done` is satisfied or 5 s pass.
fn collect(enf: &mut Enforcer, policy_id: u32, done: impl Fn(&[Verdict]) -> bool) -> Vec<Verdict> {
    let mut ring = enf.take_verdicts().expect("verdict ring buffer");
    let start = Instant::now();
    let mut out = Vec::new();
    while start.elapsed() < Duration::from_secs(5) {
        while let Some(item) = ring.next() {
            let v = verdict::decode(&item).expect("verdict decodes");
            if v.policy_id == policy_id {
                out.push(v);
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
fn network_falls_back_to_cgroup_sock_addr_and_decides_inside_the_cgroup_only() {
    let (opts, _pins) = options("fallback");
    let (mut enf, status) = Enforcer::start(&opts).expect("enforcer starts without BPF-LSM");
    eprintln!("{status}\n{:?}", status.notes);
    assert_eq!(status.network, Backend::CgroupSockAddr, "{status}");
    for d in [Domain::Process, Domain::File, Domain::Capabilities] {
        match status.get(d) {
            Backend::Unavailable(reason) => assert!(reason.contains("BPF-LSM"), "{d}: {reason}"),
            other => panic!("{d} should be unavailable on this kernel, is {other}"),
        }
    }
    assert!(status.to_string().contains("file: enforcement unavailable: "), "{status}");

    let ports = Ports::new();
    let cg = TestCgroup::new("enforce-fallback");
    let rev = enf.apply("fallback-test", 41, &[cg.id], &ports.policy(), network_modes()).unwrap();
    assert!(rev > 0);

    let inside = ports.probe(Some(&cg.dir));
    expect(&inside, "tcp-allowed", "ok");
    expect(&inside, "tcp-denied", "EPERM");
    expect(&inside, "mapped-allowed", "ok");
    expect(&inside, "mapped-denied", "EPERM");
    expect(&inside, "udp-allowed", "ok");
    expect(&inside, "udp-denied", "EPERM");

    // A cgroup created inside the enforced one is under the same policy from its mkdir on.
    let child = cg.dir.join("child");
    std::fs::create_dir(&child).unwrap();
    let nested = ports.probe(Some(&child));
    expect(&nested, "tcp-denied", "EPERM");
    expect(&nested, "tcp-allowed", "ok");
    assert!(enf.policies()[0].inherited.contains(&std::fs::metadata(&child).unwrap().ino()));
    std::fs::remove_dir(&child).unwrap();
    assert!(enf.policies()[0].inherited.is_empty(), "the entry goes with the cgroup");

    let outside = ports.probe(None);
    for name in ["tcp-allowed", "tcp-denied", "mapped-allowed", "mapped-denied", "udp-allowed", "udp-denied"]
    {
        expect(&outside, name, "ok");
    }

    let denied_tcp = format!("127.0.0.1:{}/tcp", ports.tcp_denied);
    let denied_udp = format!("127.0.0.1:{}/udp", ports.tcp_denied);
    let verdicts = collect(&mut enf, 41, |vs| {
        vs.iter().any(|v| v.object == denied_tcp) && vs.iter().any(|v| v.object == denied_udp)
    });
    let tcp = verdicts.iter().find(|v| v.object == denied_tcp).unwrap_or_else(|| panic!("{verdicts:#?}"));
    assert!(tcp.deny && !tcp.send);
    assert_eq!((tcp.domain, tcp.cgroup_id), (Domain::Network, cg.id));
    assert_eq!(tcp.comm, "python3");
    let udp = verdicts.iter().find(|v| v.object == denied_udp).unwrap_or_else(|| panic!("{verdicts:#?}"));
    assert!(udp.deny && udp.send);
    assert!(verdicts.iter().all(|v| !v.object.ends_with(&format!(":{}/tcp", ports.tcp_ok))), "{verdicts:#?}");

    // Audit: the same connect goes through and is reported as would-deny.
    enf.apply(
        "fallback-test",
        41,
        &[cg.id],
        &ports.policy(),
        Modes { network: Mode::Audit, ..Default::default() },
    )
    .unwrap();
    expect(&ports.probe(Some(&cg.dir)), "tcp-denied", "ok");

    enf.release(41).unwrap();
    expect(&ports.probe(Some(&cg.dir)), "tcp-denied", "ok");
    assert!(enf.policies().is_empty());
    enf.remove_all().unwrap();
}

#[test]
fn pinned_enforcement_outlives_the_enforcer_and_is_adopted() {
    let (opts, _pins) = options("adopt");
    let ports = Ports::new();
    let cg = TestCgroup::new("enforce-adopt");
    let (mut enf, _) = Enforcer::start(&opts).unwrap();
    // One enforcer per pinned state.
    let second = Enforcer::start(&opts).map(|_| ()).unwrap_err();
    assert!(matches!(second, stance::enforce::EnforceError::Busy { .. }), "{second}");
    let rev = enf.apply("adopt-test", 7, &[cg.id], &ports.policy(), network_modes()).unwrap();
    // As after `kill -9`: the process's file descriptors are gone; the pins are not.
    drop(enf);
    expect(&ports.probe(Some(&cg.dir)), "tcp-denied", "EPERM");
    expect(&ports.probe(Some(&cg.dir)), "tcp-allowed", "ok");

    let (mut enf, status) = Enforcer::start(&opts).unwrap();
    assert_eq!(status.adopted, 1, "{status:?}");
    let adopted = enf.policies();
    assert_eq!(adopted.len(), 1);
    assert_eq!((adopted[0].policy_id, adopted[0].rev), (7, rev));
    assert_eq!(adopted[0].cgroups, BTreeSet::from([cg.id]));
    assert_eq!(adopted[0].modes.network, Mode::Enforce);
    // The new generation replaced the old one: exactly one generation is pinned.
    assert_eq!(PinLayout::new(&opts.pin_dir).generations().len(), 1);
    expect(&ports.probe(Some(&cg.dir)), "tcp-denied", "EPERM");

    // A new revision after adoption, then release.
    let mut wider = ports.policy();
    wider.network.push(NetRule {
        net: "127.0.0.0/8".parse().unwrap(),
        port_lo: ports.tcp_denied,
        port_hi: ports.tcp_denied,
        protocol: None,
    });
    let rev2 = enf.apply("adopt-test", 7, &[cg.id], &wider, network_modes()).unwrap();
    assert!(rev2 > rev, "revisions are never reused");
    expect(&ports.probe(Some(&cg.dir)), "tcp-denied", "ok");
    enf.release(7).unwrap();
    enf.remove_all().unwrap();
    assert!(!opts.pin_dir.join("enforce-v1").exists());
}

#[test]
fn a_policy_too_large_fails_loudly_and_keeps_the_previous_one() {
    let (opts, _pins) = options("large");
    let ports = Ports::new();
    let cg = TestCgroup::new("enforce-large");
    let (mut enf, _) = Enforcer::start(&opts).unwrap();
    enf.apply("large-test", 9, &[cg.id], &ports.policy(), network_modes()).unwrap();
    let huge = too_many_network_rules();
    let err = enf.apply("large-test", 9, &[cg.id], &huge, network_modes()).unwrap_err();
    assert!(matches!(err, stance::enforce::EnforceError::TooLarge { what: "network rules", .. }), "{err}");
    eprintln!("{err}");
    // The previous revision is untouched.
    expect(&ports.probe(Some(&cg.dir)), "tcp-denied", "EPERM");
    expect(&ports.probe(Some(&cg.dir)), "tcp-allowed", "ok");
    enf.remove_all().unwrap();
}

/// The id of the BPF link pinned at `path` (bpftool), if one is.
fn pinned_link_id(path: &Path) -> Option<u64> {
    let out = Command::new("bpftool").args(["-j", "link", "show", "pinned"]).arg(path).output().ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get("id")?.as_u64()
}

fn link_exists(id: u64) -> bool {
    Command::new("bpftool")
        .args(["link", "show", "id", &id.to_string()])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether link `id` is gone within 5 s: the kernel frees a link whose last reference was its pin
/// from a work item, after the unpin returns.
fn link_goes(id: u64) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if !link_exists(id) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn the_deciding_programs_are_attached_only_while_a_workload_has_a_policy() {
    let (opts, _pins) = options("armed");
    let ports = Ports::new();
    let cg = TestCgroup::new("enforce-armed");
    let layout = PinLayout::new(&opts.pin_dir);
    let (mut enf, status) = Enforcer::start(&opts).unwrap();
    assert_eq!(status.network, Backend::CgroupSockAddr, "{status}");
    let generation = *layout.generations().last().expect("a generation is pinned");
    let connect4 = layout.generation(generation).join("stance_connect4");
    // After the canary, nothing is left attached to decide: no pin, and the workload is not decided.
    assert!(!enf.armed());
    assert!(!connect4.exists(), "{} pinned with no policy", connect4.display());
    assert!(layout.generation(generation).join("stance_cgroup_inherit").exists());
    expect(&ports.probe(Some(&cg.dir)), "tcp-denied", "ok");

    enf.apply("armed-test", 11, &[cg.id], &ports.policy(), network_modes()).unwrap();
    assert!(enf.armed());
    let first = pinned_link_id(&connect4).expect("stance_connect4 pinned while a policy is in force");
    expect(&ports.probe(Some(&cg.dir)), "tcp-denied", "EPERM");

    // The last policy goes: the link is unpinned and, with no other reference, gone from the kernel.
    enf.release(11).unwrap();
    assert!(!enf.armed());
    assert!(!connect4.exists());
    assert!(link_goes(first), "link {first} still exists 5 s after the last release");
    expect(&ports.probe(Some(&cg.dir)), "tcp-denied", "ok");

    // The same enforcer attaches its programs again for the next policy.
    enf.apply("armed-test", 11, &[cg.id], &ports.policy(), network_modes()).unwrap();
    let second = pinned_link_id(&connect4).expect("attached again");
    assert_ne!(first, second);
    expect(&ports.probe(Some(&cg.dir)), "tcp-denied", "EPERM");

    // A policy that cannot be applied while none is in force leaves nothing attached.
    enf.release(11).unwrap();
    let bad = too_many_network_rules();
    enf.apply("armed-test", 11, &[cg.id], &bad, network_modes()).unwrap_err();
    assert!(!enf.armed() && !connect4.exists());

    // An adopting enforcer attaches at once when a policy is pinned.
    enf.apply("armed-test", 11, &[cg.id], &ports.policy(), network_modes()).unwrap();
    drop(enf);
    let (mut enf, status) = Enforcer::start(&opts).unwrap();
    assert_eq!(status.adopted, 1);
    assert!(enf.armed());
    expect(&ports.probe(Some(&cg.dir)), "tcp-denied", "EPERM");
    enf.release(11).unwrap();
    assert!(!enf.armed());
    enf.remove_all().unwrap();
}
