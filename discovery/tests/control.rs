//! Root tier: the control channel and enforcement events end to end — the real daemon, its real
//! socket, the real CLI, real SQLite files. On this machine BPF-LSM is not available, so `stance mode
//! W audit` must fail clearly and change nothing; the VM tier covers enforcement itself.

mod common;

use std::{
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use common::*;
use stance::{
    enforce::{Domain, Modes},
    store::{Store, VerdictRecord},
};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

fn stderr_line(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "expected a failure; stdout: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("stance: "), "{err}");
    err.trim_end().to_owned()
}

fn config_with_socket(socket: &Path) -> String {
    format!("flush_interval_ms = 200\ncontrol_socket = \"{}\"\n", socket.display())
}

#[test]
fn mode_without_a_daemon_says_how_to_start_one() {
    let tmp = TempDir::new("ctl-none");
    let socket = tmp.path().join("control.sock");
    let out = stance(&["mode", "web", "audit", "--control", socket.to_str().unwrap()]);
    assert_eq!(
        stderr_line(&out),
        format!(
            "stance: the daemon is not running (no control socket at {}): start it with `stance run`",
            socket.display()
        )
    );

    // A socket file left by a daemon that was killed: nothing listens on it.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let out = Command::new(STANCE)
        .args(["mode", "web", "enforce"])
        .env("STANCE_CONTROL", &socket)
        .output()
        .unwrap();
    let err = stderr_line(&out);
    assert!(err.contains("the daemon is not running (nothing listens on the control socket"), "{err}");
}

#[test]
fn mode_as_non_root_is_refused_before_anything_else() {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", STANCE, "mode", "web", "audit"])
        .output()
        .unwrap();
    let err = stderr_line(&out);
    assert!(err.starts_with("stance: stance mode must run as root"), "{err}");

    // Bad mode and domain values are the argument parser's to refuse.
    let out = stance(&["mode", "web", "block"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown mode 'block'"));
    let out = stance(&["mode", "web", "audit", "--domain", "disk"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown domain 'disk'"));
}

#[test]
fn mode_through_the_running_daemon() {
    let tmp = TempDir::new("ctl");
    let run_dir = tmp.path().join("run");
    let socket = run_dir.join("control.sock");
    // A stale socket from a daemon that died is replaced (the requests below go through it).
    std::fs::create_dir(&run_dir).unwrap();
    std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());

    let mut daemon = Daemon::start(tmp.path(), &config_with_socket(&socket));
    for d in ["process", "file", "capabilities"] {
        let line = daemon.wait_for_line(&format!("  enforcement {d}: "), Duration::from_secs(5));
        // This kernel refuses BPF-LSM programs.
        assert!(line.starts_with(&format!("  enforcement {d}: unavailable: ")), "{line}");
    }
    // Network falls back to cgroup sock_addr programs, which load here.
    let line = daemon.wait_for_line("  enforcement network: ", Duration::from_secs(5));
    assert_eq!(line, "  enforcement network: cgroup sock_addr programs");
    daemon.wait_for_line(&format!("  control: listening on {}", socket.display()), Duration::from_secs(5));

    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket mode");
    assert_eq!(std::fs::metadata(&run_dir).unwrap().permissions().mode() & 0o777, 0o700);

    let ctl = socket.to_str().unwrap();
    let out = stance(&["mode", "no-such-workload", "audit", "--control", ctl]);
    assert_eq!(stderr_line(&out), "stance: unknown workload 'no-such-workload' (see `stance workloads`)");

    // A real workload, so that the database knows it.
    let name = workload("ctl");
    let st = Command::new(STANCE).args(["launch", "--workload", &name, "--", "/bin/true"]).status().unwrap();
    assert!(st.success());
    wait_graph(&daemon.db, &name, Duration::from_secs(15), |g| !labels(g, "executable").is_empty());

    let out = stance(&["mode", &name, "audit", "--control", ctl]);
    let err = stderr_line(&out);
    assert!(err.starts_with("stance: enforcement unavailable: "), "{err}");
    // Nothing was half-applied: every domain is still observe in the database.
    let db = daemon.db.clone();
    let state = block_on(async {
        let store = Store::open_read_only(&db).await.unwrap();
        let state = store.workload_enforcement(&name).await.unwrap();
        store.close().await;
        state
    });
    assert_eq!((state.modes, state.policy), (Modes::default(), None));

    // Network alone can be enforced here (cgroup sock_addr fallback). The workload never connected
    // anywhere, so a connect from it is now denied, reported, and allowed again after observe.
    let out = stance(&["mode", &name, "enforce", "--domain", "network", "--control", ctl]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("network=enforce"), "{out:?}");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let connect = format!(
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {}), timeout=5)\n    print('connected')\nexcept OSError as e:\n    print('errno', e.errno)",
        listener.local_addr().unwrap().port()
    );
    let run = |name: &str| {
        let out = Command::new(STANCE)
            .args(["launch", "--workload", name, "--", "/usr/bin/python3", "-c", &connect])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(run(&name), format!("errno {}", libc::EPERM), "connect from the enforced workload");
    assert_eq!(run(&workload("ctl-other")), "connected", "another workload is untouched");
    let dbs = daemon.db.to_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ev = stance_json(&["events", "--workload", &name, "--kind", "deny", "--db", &dbs, "-o", "json"]);
        if ev.as_array().is_some_and(|a| a.iter().any(|e| e["domain"] == "network")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no network deny event: {ev:#}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Observe needs no enforcer.
    let out = stance(&["mode", &name, "observe", "--control", ctl]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "{name}: process=observe file=observe network=observe capabilities=observe (no policy loaded)\n"
        )
    );

    // A second daemon finds the socket answered and goes on observing without it.
    let tmp2 = TempDir::new("ctl-second");
    let mut second = Daemon::start(tmp2.path(), &config_with_socket(&socket));
    let line = second.wait_for_line("  control: ", Duration::from_secs(5));
    assert_eq!(
        line,
        format!("  control: unavailable: another stance daemon answers on {}", socket.display())
    );
    let (code, _) = second.stop();
    assert_eq!(code, 0);
    assert!(socket.exists(), "the second daemon leaves the first one's socket alone");

    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
    assert!(!socket.exists(), "a clean stop removes the socket");
}

fn verdict(workload_id: i64, domain: Domain, deny: bool, object: &str, at: i64) -> VerdictRecord {
    VerdictRecord {
        workload_id,
        domain,
        deny,
        object: object.to_owned(),
        actor: "/usr/bin/python3.11".to_owned(),
        pid: 1234,
        tid: 1235,
        cgroup_id: 99,
        at,
        truncated: false,
        send: false,
    }
}

#[test]
fn events_are_read_from_the_database_while_the_daemon_writes_it() {
    let tmp = TempDir::new("events");
    let daemon = Daemon::start(tmp.path(), &config_with_socket(&tmp.path().join("c.sock")));
    let (web, other) = (workload("ev-web"), workload("ev-other"));
    for name in [&web, &other] {
        let st =
            Command::new(STANCE).args(["launch", "--workload", name, "--", "/bin/true"]).status().unwrap();
        assert!(st.success());
        wait_graph(&daemon.db, name, Duration::from_secs(15), |g| !labels(g, "executable").is_empty());
    }
    // Verdicts as the daemon will write them once the enforcer lands, through the same store API.
    let at = 1_714_564_800_000_000_000; // 2024-05-01T12:00:00Z
    let db = daemon.db.clone();
    block_on(async {
        let store = Store::open(&db).await.unwrap();
        let web_id = store.workload_enforcement(&web).await.unwrap().id;
        let other_id = store.workload_enforcement(&other).await.unwrap().id;
        let mut long = verdict(web_id, Domain::File, true, "/deep/path/cut/sho", at + 3_000_000_000);
        long.truncated = true;
        let stored = store
            .write_verdicts(&[
                verdict(web_id, Domain::File, false, "/etc/shadow", at),
                verdict(web_id, Domain::Process, true, "/usr/bin/dash", at + 1_000_000_000),
                verdict(other_id, Domain::Network, true, "10.1.2.3:443/tcp", at + 2_000_000_000),
                long,
                verdict(web_id, Domain::Capabilities, true, "CAP_NET_RAW", at + 4_000_000_000),
            ])
            .await
            .unwrap();
        assert_eq!(stored, 5);
        store.close().await;
    });
    let dbs = db.to_str().unwrap();

    let denies = stance_json(&["events", "--db", dbs, "--workload", &web, "--kind", "deny", "-o", "json"]);
    let objects: Vec<&str> =
        denies.as_array().unwrap().iter().map(|e| e["object"].as_str().unwrap()).collect();
    assert_eq!(
        objects,
        ["CAP_NET_RAW", "/deep/path/cut/sho", "/usr/bin/dash"],
        "newest first, web's denies only"
    );
    let dash = &denies[2];
    assert_eq!(dash["workload"], web.as_str());
    assert_eq!(dash["domain"], "process");
    assert_eq!(dash["kind"], "deny");
    assert_eq!(dash["actor"], "/usr/bin/python3.11");
    assert_eq!(dash["at"], "2024-05-01T12:00:01.000Z");
    assert_eq!(dash["pid"], 1234);
    assert_eq!(dash["truncated"], false);
    assert_eq!(denies[1]["truncated"], true);

    let would = stance_json(&["events", "--db", dbs, "--kind", "would-deny", "-o", "json"]);
    assert_eq!(would.as_array().unwrap().len(), 1);
    assert_eq!(would[0]["object"], "/etc/shadow");
    let other_events = stance_json(&["events", "--db", dbs, "--workload", &other, "-o", "json"]);
    assert_eq!(other_events[0]["object"], "10.1.2.3:443/tcp");
    let limited = stance_json(&[
        "events",
        "--db",
        dbs,
        "--limit",
        "2",
        "--since",
        "2024-05-01T12:00:01Z",
        "-o",
        "json",
    ]);
    let objects: Vec<&str> =
        limited.as_array().unwrap().iter().map(|e| e["object"].as_str().unwrap()).collect();
    assert_eq!(objects, ["CAP_NET_RAW", "/deep/path/cut/sho"]);

    let table = stance(&["events", "--db", dbs, "--workload", &web]);
    assert!(table.status.success());
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("AT "), "{text}");
    assert!(text.contains("/deep/path/cut/sho (truncated)"), "{text}");
    assert_eq!(text.lines().count(), 5, "{text}");

    let err = stderr_line(&stance(&["events", "--db", dbs, "--workload", "no-such-workload"]));
    assert_eq!(err, "stance: unknown workload 'no-such-workload' (see `stance workloads`)");
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
}

/// The verdict reader's ring-buffer mechanics (wake-ups, batches, the drain at stop) on a real ring
/// buffer: the observation probes' own, read with a decoder that turns this test's opens into
/// records, as the enforcer's will turn its verdicts.
#[test]
fn the_verdict_reader_reads_a_real_ring_buffer_until_stopped() {
    use std::sync::{atomic::Ordering, Arc};

    use stance::{
        control::verdicts::{run_reader, VerdictStats},
        probes::{
            decode::{decode, Body},
            LoadOptions, Probes,
        },
    };
    use tokio::sync::{mpsc, watch};

    let tmp = TempDir::new("verdict-reader");
    let marker = tmp.path().join("marker");
    std::fs::write(&marker, "m").unwrap();
    let wanted = marker.to_string_lossy().into_owned();
    let mut probes = Probes::load(&LoadOptions {
        ringbuf_bytes: 16 << 20,
        dedup_window_ns: 0,
        argv_max: 64,
        wakeup_bytes: 0,
        self_tgid: 0,
    })
    .unwrap();
    let ringbuf = probes.take_ringbuf().unwrap();
    let records =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap().block_on(
            async {
                let (tx, mut rx) = mpsc::channel(1024);
                let (stop_tx, stop_rx) = watch::channel(false);
                let stats = Arc::new(VerdictStats::default());
                // Records of other processes are no one's here, as the canary's are for the daemon.
                let decode = move |bytes: &[u8]| -> Result<Option<VerdictRecord>, String> {
                    let ev = decode(bytes).map_err(|e| e.to_string())?;
                    match ev.body {
                        Body::Open { path, .. } if path == wanted => {
                            Ok(Some(verdict(7, Domain::File, true, &path, 0)))
                        }
                        _ => Ok(None),
                    }
                };
                let reader = tokio::spawn(run_reader(ringbuf, decode, tx, stats.clone(), stop_rx));
                for _ in 0..3 {
                    let st = Command::new("/bin/cat").arg(&marker).output().unwrap();
                    assert!(st.status.success());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let _ = stop_tx.send(true);
                reader.await.unwrap().unwrap();
                assert!(stats.received.load(Ordering::Relaxed) >= 3);
                let mut records = Vec::new();
                while let Some(batch) = rx.recv().await {
                    records.extend(batch);
                }
                records
            },
        );
    drop(probes);
    assert!(records.len() >= 3, "each cat's open arrives as a record: {records:?}");
    assert!(records.iter().all(|r| r.object == marker.to_string_lossy()));
}
