//! Root tier, end to end on this machine's kernel: the real daemon observes a workload started with
//! `stance launch`, and the real CLI reads the graph back from the real SQLite file.

mod common;

use std::{
    net::{TcpListener, UdpSocket},
    process::Command,
    time::Duration,
};

use common::*;

const FAST_FLUSH: &str = "flush_interval_ms = 200\n";

fn setup_files(dir: &std::path::Path) {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for f in ["a.txt", "b.txt", "c.txt", "d.txt", "e.txt"] {
        std::fs::write(data.join(f), f).unwrap();
    }
    std::os::unix::fs::symlink(data.join("c.txt"), dir.join("link-c")).unwrap();
}

#[test]
fn graph_holds_real_absolute_paths_endpoints_and_modes() {
    let tmp = TempDir::new("e2e");
    let work = tmp.path().join("w");
    setup_files(&work);
    let daemon = Daemon::start(tmp.path(), FAST_FLUSH);
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let name = workload("e2e");
    let script = repo_root().join("tests/workloads/observe.py");
    let status = Command::new(STANCE)
        .args(["launch", "--workload", &name, "--", "/usr/bin/python3"])
        .arg(&script)
        .arg(&work)
        .arg(tcp.local_addr().unwrap().port().to_string())
        .arg(udp.local_addr().unwrap().port().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "workload failed: {status}");

    let data = work.join("data").canonicalize().unwrap();
    let want_files: Vec<String> = ["a.txt", "b.txt", "c.txt", "d.txt", "e.txt", "out.txt"]
        .iter()
        .map(|f| data.join(f).to_string_lossy().into_owned())
        .collect();
    let tcp_ep = format!("127.0.0.1:{}/tcp", tcp.local_addr().unwrap().port());
    let udp_ep = format!("127.0.0.1:{}/udp", udp.local_addr().unwrap().port());
    let g = wait_graph(&daemon.db, &name, Duration::from_secs(15), |g| {
        let files = labels(g, "file");
        let eps = labels(g, "endpoint");
        want_files.iter().all(|f| files.contains(f)) && eps.contains(&tcp_ep) && eps.contains(&udp_ep)
    });
    let files = labels(&g, "file");
    let execs = labels(&g, "executable");
    let eps = labels(&g, "endpoint");
    for f in &want_files {
        assert!(files.contains(f), "missing {f} in {files:#?}");
    }
    // No relative, symlink or /proc/self path ever becomes a file node.
    for f in &files {
        assert!(f.starts_with('/'), "relative path {f}");
        assert!(!f.ends_with("/link-c"), "symlink path {f}");
        assert!(!f.starts_with("/proc/self/") && !f.contains("/fd/"), "magic link path {f}");
    }
    assert!(eps.contains(&tcp_ep), "{eps:?}");
    assert!(eps.contains(&udp_ep), "{eps:?}");
    assert!(execs.iter().any(|e| e.starts_with("/usr/bin/python3")), "{execs:?}");
    assert!(
        execs.contains(&"/usr/bin/cat".to_owned()),
        "exec resolved by the kernel, not /bin/cat: {execs:?}"
    );

    // Access modes and actors.
    let a = data.join("a.txt").to_string_lossy().into_owned();
    let a_edges = edges_to(&g, &a);
    assert!(
        a_edges
            .iter()
            .any(|e| e["access"] == "read" && e["actor"].as_str().unwrap().starts_with("/usr/bin/python3")),
        "{a_edges:#?}"
    );
    assert!(a_edges.iter().any(|e| e["access"] == "read" && e["actor"] == "/usr/bin/cat"), "{a_edges:#?}");
    let out = data.join("out.txt").to_string_lossy().into_owned();
    assert!(edges_to(&g, &out).iter().any(|e| e["access"] == "write,create,truncate" && e["result"] == "ok"));
    let udp_edges = edges_to(&g, &udp_ep);
    assert!(udp_edges.iter().any(|e| e["access"] == "udp,send" && e["kind"] == "connect"), "{udp_edges:#?}");
    // Evidence fields are present on every edge.
    for e in g["edges"].as_array().unwrap() {
        assert!(e["count"].as_u64().unwrap() >= 1);
        assert!(e["first_seen"].is_string() && e["last_seen"].is_string());
    }
    // The exec of python by the launcher (outside the workload) starts at the workload node.
    let py = execs.iter().find(|e| e.starts_with("/usr/bin/python3")).unwrap();
    assert!(edges_to(&g, py).iter().any(|e| e["kind"] == "exec" && e["source_label"] == name.as_str()));

    let list = stance_json(&["workloads", "--db", daemon.db.to_str().unwrap(), "-o", "json"]);
    let w = list.as_array().unwrap().iter().find(|w| w["name"] == name.as_str()).expect("workload listed");
    assert_eq!(w["kind"], "launched");

    let dot = stance(&["graph", &name, "--db", daemon.db.to_str().unwrap(), "-o", "dot"]);
    assert!(dot.status.success());
    assert!(String::from_utf8_lossy(&dot.stdout).starts_with("digraph"));

    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
}

/// Enforcement decides renames, links, unlinks, truncates by path and mknods as writes to each name
/// (a workload that saves a file by renaming a temporary one over it needs write on both names), so
/// observation must record each name as a write edge saying which change, and nothing for rmdir.
#[test]
fn name_changes_are_write_edges_to_each_name() {
    let tmp = TempDir::new("names");
    let dir = tmp.path().join("n");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    for f in ["trunc.txt", "x1", "x2"] {
        std::fs::write(dir.join(f), f).unwrap();
    }
    let dir = dir.canonicalize().unwrap();
    let daemon = Daemon::start(tmp.path(), FAST_FLUSH);
    let name = workload("names");
    let script = repo_root().join("tests/workloads/names.py");
    let status = Command::new(STANCE)
        .args(["launch", "--workload", &name, "--", "/usr/bin/python3"])
        .arg(&script)
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success(), "workload failed: {status}");

    let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let want = [
        (p("tmp.1"), "write,rename-from", "ok"),
        (p("dump.rdb"), "write,rename-to", "ok"),
        (p("dump.rdb"), "write,link-from", "ok"),
        (p("hard"), "write,link-to", "ok"),
        (p("hard"), "write,unlink", "ok"),
        (p("trunc.txt"), "write,truncate", "ok"),
        (p("fifo"), "write,create", "ok"),
        (p("x1"), "write,rename-from", "ok"),
        (p("x2"), "write,rename-to", "ok"),
        (p("gone"), "write,unlink", "ENOENT"),
    ];
    let has = |g: &serde_json::Value, (path, access, result): &(String, &str, &str)| {
        edges_to(g, path).iter().any(|e| {
            e["kind"] == "open"
                && e["access"] == *access
                && e["result"] == *result
                && e["actor"].as_str().unwrap_or("").starts_with("/usr/bin/python3")
        })
    };
    let g = wait_graph(&daemon.db, &name, Duration::from_secs(15), |g| want.iter().all(|w| has(g, w)));
    for w in &want {
        assert!(has(&g, w), "no edge {w:?} in {:#}", g["edges"]);
    }
    assert!(edges_to(&g, &p("sub")).is_empty(), "rmdir recorded: {:#}", g["edges"]);
    // The file names are absolute: the relative names were joined with the directory the kernel
    // resolved (the cwd, or the directory fd).
    for f in labels(&g, "file") {
        assert!(f.starts_with('/') && !f.contains("/./") && !f.contains("/../"), "{f}");
    }
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
}

#[test]
fn clean_stop_flushes_what_was_buffered() {
    let tmp = TempDir::new("flush");
    // A flush interval far longer than the test: only the stop flush can write the workload.
    let daemon = Daemon::start(tmp.path(), "flush_interval_ms = 600000\n");
    let name = workload("flush");
    let marker = tmp.path().join("marker.txt");
    std::fs::write(&marker, "m").unwrap();
    let st = Command::new(STANCE)
        .args(["launch", "--workload", &name, "--", "/bin/cat"])
        .arg(&marker)
        .output()
        .unwrap();
    assert!(st.status.success());
    std::thread::sleep(Duration::from_millis(300));
    let db = daemon.db.clone();
    let (code, out) = daemon.stop();
    assert_eq!(code, 0, "{out:?}");
    let g = stance_json(&["graph", &name, "--db", db.to_str().unwrap()]);
    let files = labels(&g, "file");
    assert!(files.contains(&marker.canonicalize().unwrap().to_string_lossy().into_owned()), "{files:?}");
}

#[test]
fn errors_are_one_clear_line() {
    let tmp = TempDir::new("errs");
    let db = tmp.path().join("none.db");
    // Query before any daemon ran.
    let out = stance(&["workloads", "--db", db.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with("stance: "), "{err}");

    // Unwritable database for the daemon.
    let out = stance(&["run", "--db", "/proc/stance-test/x.db"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("/proc/stance-test/x.db"), "{err}");

    // Not root.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", STANCE, "run", "--db"])
        .arg(tmp.path().join("x.db"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must run as root"), "{err}");

    // Unknown workload on a real database.
    let daemon = Daemon::start(tmp.path(), FAST_FLUSH);
    let out = stance(&["graph", "no-such-workload", "--db", daemon.db.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("no-such-workload"), "{err}");

    // Bad flag, bad workload name, bad config.
    let out = stance(&["graph", "x", "-o", "yaml"]);
    assert!(!out.status.success());
    let out = stance(&["launch", "--workload", "../etc", "--", "/bin/true"]);
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim().lines().count(), 1);
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "flush_interval = 5\n").unwrap();
    let out = Command::new(STANCE)
        .args(["run", "--db"])
        .arg(tmp.path().join("y.db"))
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field"));
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
}

#[test]
fn workloads_running_before_the_daemon_are_picked_up() {
    let tmp = TempDir::new("pre");
    let name = workload("pre");
    // Started before the daemon; ended by pid at the end of the test.
    let mut pre =
        Command::new(STANCE).args(["launch", "--workload", &name, "--", "/bin/sleep", "60"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let daemon = Daemon::start(tmp.path(), FAST_FLUSH);
    let list = stance_json(&["workloads", "--db", daemon.db.to_str().unwrap(), "-o", "json"]);
    let found =
        list.as_array().unwrap().iter().any(|w| w["name"] == name.as_str() && w["kind"] == "launched");
    let g = stance_json(&["graph", &name, "--db", daemon.db.to_str().unwrap()]);
    // SAFETY: kill on the pid of the launcher this test started; it forwards SIGTERM to sleep.
    unsafe { libc::kill(pre.id() as i32, libc::SIGTERM) };
    let _ = pre.wait();
    assert!(found, "{list:#}");
    assert!(labels(&g, "executable").contains(&"/usr/bin/sleep".to_owned()), "{g:#}");
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
}
