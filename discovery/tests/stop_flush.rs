//! Root tier: repeats the kernel suppressed within the last dedup window before a clean stop reach
//! the graph. No record carries them (the next one would, after the window), so the daemon must
//! read them from the kernel's dedup state at stop and add them to their edges.

mod common;

use std::{
    io::{BufRead, BufReader},
    net::{TcpListener, UdpSocket},
    process::{Command, Stdio},
    time::Duration,
};

use common::*;

/// Opens of one file, TCP connects and UDP sendto's, all far inside the default 10 s window.
const OPENS: u64 = 400;
const CONNECTS: u64 = 60;
const SENDS: u64 = 150;

const WORKLOAD: &str = r#"
import os, socket, sys
path, tcp_port, udp_port, opens, connects, sends = sys.argv[1], *map(int, sys.argv[2:])
for _ in range(opens):
    os.close(os.open(path, os.O_RDONLY))
for _ in range(connects):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.connect(("127.0.0.1", tcp_port))
    s.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(sends):
    u.sendto(b"x", ("127.0.0.1", udp_port))
"#;

#[test]
fn repeats_held_in_the_kernel_at_a_clean_stop_are_counted() {
    let tmp = TempDir::new("held");
    let daemon = Daemon::start(tmp.path(), "");
    let file = tmp.path().join("repeated.txt");
    std::fs::write(&file, "r").unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (tcp_port, udp_port) = (tcp.local_addr().unwrap().port(), udp.local_addr().unwrap().port());
    // Accept every connection, so none waits on a full backlog.
    let acceptor = std::thread::spawn(move || {
        for _ in 0..CONNECTS {
            drop(tcp.accept().unwrap());
        }
    });

    // From a file: a program on the command line would be cut as a long argv (an argv-truncated
    // loss), and the test wants no loss at all.
    let script = tmp.path().join("repeat.py");
    std::fs::write(&script, WORKLOAD).unwrap();
    let name = workload("held");
    let started = std::time::Instant::now();
    let st = Command::new(STANCE)
        .args(["launch", "--workload", &name, "--", "/usr/bin/python3"])
        .arg(&script)
        .arg(&file)
        .args([tcp_port, udp_port].map(|p| p.to_string()))
        .args([OPENS, CONNECTS, SENDS].map(|n| n.to_string()))
        .status()
        .unwrap();
    assert!(st.success(), "workload failed: {st}");
    acceptor.join().unwrap();
    // Well inside the window: every occurrence after each key's first is still held in the kernel.
    assert!(started.elapsed() < Duration::from_secs(8), "workload too slow for the test's premise");

    let db = daemon.db.clone();
    let (code, out) = daemon.stop();
    assert_eq!(code, 0, "{out:?}");
    let g = stance_json(&["graph", &name, "--db", db.to_str().unwrap(), "-o", "json"]);

    let count = |label: &str, kind: &str, access: &str| -> u64 {
        let edges: Vec<_> =
            edges_to(&g, label).into_iter().filter(|e| e["kind"] == kind && e["access"] == access).collect();
        assert_eq!(edges.len(), 1, "one {kind} {access} edge to {label}: {edges:#?}");
        assert_eq!(edges[0]["result"], "ok");
        edges[0]["count"].as_u64().unwrap()
    };
    let path = file.canonicalize().unwrap().to_string_lossy().into_owned();
    assert_eq!(count(&path, "open", "read"), OPENS, "opens");
    assert_eq!(count(&format!("127.0.0.1:{tcp_port}/tcp"), "connect", "tcp"), CONNECTS, "connects");
    assert_eq!(count(&format!("127.0.0.1:{udp_port}/udp"), "connect", "udp,send"), SENDS, "sends");
    drop(udp);

    // Nothing in this workload was lost, so no count was left without an edge.
    let list = stance_json(&["workloads", "--db", db.to_str().unwrap(), "-o", "json"]);
    let w = list.as_array().unwrap().iter().find(|w| w["name"] == name.as_str()).expect("workload listed");
    assert_eq!(w["losses"]["total"].as_u64().unwrap_or(0), 0, "{w:#}");
}

/// Whoever started the daemon may stop reading its output (a killed harness, a closed terminal):
/// the stop must still flush what was observed and exit cleanly, not die writing its report.
#[test]
fn a_stop_with_nobody_reading_the_report_still_flushes() {
    let tmp = TempDir::new("epipe");
    let (mut cmd, db, pin_dir) = Daemon::command(tmp.path(), "");
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("start stance run");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("stance: writing to") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "daemon exited during start");
    }
    // The read end closes: every later line of the report fails with EPIPE.
    drop(out);

    let file = tmp.path().join("seen.txt");
    std::fs::write(&file, "s").unwrap();
    let name = workload("epipe");
    let st = Command::new(STANCE)
        .args(["launch", "--workload", &name, "--", "/bin/cat"])
        .arg(&file)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "workload failed: {st}");

    // The enforcer pinned its state (the network fallback runs on this host)...
    assert!(pin_dir.exists(), "no pin directory {} while the daemon ran", pin_dir.display());
    // SAFETY: kill on the pid of the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    // ...and with no workload in audit or enforce, a clean stop leaves nothing in the kernel.
    let left = pin_dir.exists();
    let _ = std::fs::remove_dir_all(&pin_dir);
    assert_eq!(status.code(), Some(0), "daemon exited with {status}");
    assert!(!left, "a clean stop with nothing in force left its pins in {}", pin_dir.display());
    let g = stance_json(&["graph", &name, "--db", db.to_str().unwrap(), "-o", "json"]);
    let path = file.canonicalize().unwrap().to_string_lossy().into_owned();
    assert!(labels(&g, "file").contains(&path), "{path} not in the graph: {g:#}");
}
