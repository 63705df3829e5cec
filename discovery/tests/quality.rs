//! The recommender's quality bar on real programs that no one here wrote (issue 4): nginx,
//! redis-server and memcached from Debian's packages, driven by real clients.
//!
//! For each server, under the real daemon: a training run (start, serve real requests, stop) →
//! recommend a policy → a second normal run of the same kind must cause zero would-denies when the
//! policy is replayed against it (`stance policy check`), and attacker-like actions inside the same
//! workload (spawn a shell, read /etc/shadow, connect to an unusual port, write into the binary's
//! directory) must all be denied. The rule counts per domain are printed and, when
//! STANCE_QUALITY_OUT names a file, written there as JSON (`make bench` records them).

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use common::{stance, stance_json, Daemon, TempDir, STANCE};
use serde_json::Value;

/// A server under test: how to start it in `dir` on `port`, and a client session against it.
struct Server {
    name: &'static str,
    binary: &'static str,
    argv: fn(dir: &Path, port: u16) -> Vec<String>,
    prepare: fn(dir: &Path, port: u16),
    /// One client session; `round` varies the keys/pages a little, as real traffic does.
    exercise: fn(dir: &Path, port: u16, round: u32),
}

const SERVERS: [Server; 3] = [
    Server {
        name: "nginx",
        binary: "/usr/sbin/nginx",
        argv: nginx_argv,
        prepare: nginx_prepare,
        exercise: nginx_exercise,
    },
    Server {
        name: "redis",
        binary: "/usr/bin/redis-server",
        argv: redis_argv,
        prepare: |_, _| {},
        exercise: redis_exercise,
    },
    Server {
        name: "memcached",
        binary: "/usr/bin/memcached",
        argv: memcached_argv,
        prepare: |_, _| {},
        exercise: memcached_exercise,
    },
];

// ---- nginx -----------------------------------------------------------------------------------

const PAGES: usize = 24;

fn nginx_prepare(dir: &Path, port: u16) {
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    for i in 0..PAGES {
        std::fs::write(www.join(format!("page{i}.html")), format!("<p>page {i}</p>\n")).unwrap();
    }
    std::fs::write(www.join("index.html"), "<p>index</p>\n").unwrap();
    let conf = format!(
        "daemon off;\nmaster_process on;\nworker_processes 2;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log {d}/access.log;\n  include /etc/nginx/mime.types;\n\
           server {{ listen 127.0.0.1:{port}; root {d}/www; location / {{ }} }}\n}}\n",
        d = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
}

fn nginx_argv(dir: &Path, _port: u16) -> Vec<String> {
    let d = dir.display();
    vec!["/usr/sbin/nginx".into(), "-p".into(), format!("{d}"), "-c".into(), format!("{d}/nginx.conf")]
}

fn nginx_exercise(_dir: &Path, port: u16, round: u32) {
    // Each round asks for a different half of the pages: a second run reads pages the first never did.
    let mut paths: Vec<String> = vec!["/".into(), "/index.html".into(), "/missing.html".into()];
    paths.extend(
        (0..PAGES).filter(|i| (*i as u32 + round).is_multiple_of(2)).map(|i| format!("/page{i}.html")),
    );
    for p in paths {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("http://127.0.0.1:{port}{p}"))
            .output()
            .unwrap();
        let code = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(code == "200" || (p == "/missing.html" && code == "404"), "nginx {p}: {code}");
    }
}

// ---- redis -----------------------------------------------------------------------------------

fn redis_argv(dir: &Path, port: u16) -> Vec<String> {
    let d = dir.display().to_string();
    [
        "/usr/bin/redis-server",
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--dir",
        &d,
        "--dbfilename",
        "dump.rdb",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--logfile",
        &format!("{d}/redis.log"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().unwrap();
    assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn redis_exercise(dir: &Path, port: u16, round: u32) {
    for i in 0..20 {
        let key = format!("k{round}-{i}");
        redis_cli(port, &["SET", &key, "v"]);
        assert_eq!(redis_cli(port, &["GET", &key]), "v");
    }
    redis_cli(port, &["INCR", "counter"]);
    redis_cli(port, &["LPUSH", "list", "a", "b"]);
    redis_cli(port, &["LRANGE", "list", "0", "-1"]);
    redis_cli(port, &["HSET", "h", "f", "v"]);
    redis_cli(port, &["EXPIRE", "h", "100"]);
    // A background save: a forked child writes temp-<pid>.rdb and renames it to dump.rdb. Done when
    // no save is in progress and nothing changed since the last one (LASTSAVE has only seconds).
    let _ = std::fs::remove_file(dir.join("dump.rdb"));
    redis_cli(port, &["BGSAVE"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = redis_cli(port, &["INFO", "persistence"]);
        let done =
            info.contains("rdb_bgsave_in_progress:0") && info.contains("rdb_changes_since_last_save:0");
        if done && dir.join("dump.rdb").exists() {
            break;
        }
        assert!(Instant::now() < deadline, "redis BGSAVE did not finish: {info}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---- memcached -------------------------------------------------------------------------------

fn memcached_argv(_dir: &Path, port: u16) -> Vec<String> {
    [
        "/usr/bin/memcached",
        "-l",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        "0",
        "-u",
        "nobody",
        "-m",
        "16",
        "-t",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn memcached_exercise(_dir: &Path, port: u16, round: u32) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    let mut ask = |cmd: &str, expect_prefix: &str, r: &mut BufReader<TcpStream>| {
        s.write_all(cmd.as_bytes()).unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with(expect_prefix), "memcached {cmd:?}: {line:?}");
    };
    for i in 0..20 {
        let key = format!("k{round}-{i}");
        ask(&format!("set {key} 0 0 1\r\nx\r\n"), "STORED", &mut r);
        ask(&format!("get {key}\r\n"), "VALUE", &mut r);
        let mut rest = String::new();
        r.read_line(&mut rest).unwrap(); // the value
        rest.clear();
        r.read_line(&mut rest).unwrap(); // END
        ask(&format!("delete {key}\r\n"), "DELETED", &mut r);
    }
    ask("version\r\n", "VERSION", &mut r);
    s.write_all(b"quit\r\n").unwrap();
    let mut tail = Vec::new();
    let _ = r.read_to_end(&mut tail);
}

// ---- the flow --------------------------------------------------------------------------------

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_port(port: u16, server: &mut Child, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(st) = server.try_wait().unwrap() {
            panic!("{name} exited before listening: {st}");
        }
        assert!(Instant::now() < deadline, "{name} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server under `stance launch`: stopped (SIGTERM to launch, which forwards it) even when the test
/// fails half-way, so a failing run never leaves a server behind.
struct Launched(Option<Child>);

impl Launched {
    fn stop(&mut self) -> std::process::Output {
        let child = self.0.take().expect("stopped once");
        // SAFETY: kill on the pid of a child this test started.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait_with_output().unwrap()
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        if self.0.is_some() {
            let _ = self.stop();
        }
    }
}

/// One run of a server in workload `w`: start under `stance launch`, serve a client session, stop.
fn run_once(s: &Server, w: &str, dir: &Path, port: u16, round: u32) {
    let child = Command::new(STANCE)
        .args(["launch", "--workload", w, "--"])
        .args((s.argv)(dir, port))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Launched(Some(child));
    wait_port(port, server.0.as_mut().unwrap(), s.name);
    (s.exercise)(dir, port, round);
    let out = server.stop();
    // 0, or 128+SIGTERM where the server dies of the signal rather than exiting.
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == 128 + libc::SIGTERM,
        "{} exited {code}: {}",
        s.name,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The daemon writes on its flush interval: give it two to be sure a run is stored.
fn settle() {
    std::thread::sleep(Duration::from_millis(1500));
}

fn rfc3339_now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// What `stance policy check` says the given version would deny in [since, until).
fn would_deny(w: &str, db: &str, version: &str, since: &str, until: Option<&str>) -> Vec<Value> {
    let mut args =
        vec!["policy", "check", w, "--db", db, "--version", version, "--since", since, "-o", "json"];
    if let Some(u) = until {
        args.extend(["--until", u]);
    }
    let v = stance_json(&args);
    v["denied"].as_array().cloned().unwrap_or_else(|| panic!("policy check: no `denied` list: {v:#}"))
}

#[test]
fn recommended_policies_fit_real_servers_and_stop_attackers() {
    for tool in ["curl", "redis-cli"] {
        assert!(
            Command::new(tool).arg("--version").output().is_ok(),
            "{tool} missing: `make deps` installs it"
        );
    }
    let tmp = TempDir::new("quality");
    let d = Daemon::start(tmp.path(), "flush_interval_ms = 200\n");
    let db = d.db.to_str().unwrap().to_owned();
    let mut counts = serde_json::Map::new();

    for s in &SERVERS {
        assert!(Path::new(s.binary).exists(), "{} missing: `make deps` installs it", s.binary);
        let w = common::workload(&format!("q-{}", s.name));
        let dir = tmp.path().join(s.name);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        (s.prepare)(&dir, port);

        // Training run, then the recommended policy as of now.
        run_once(s, &w, &dir, port, 0);
        settle();
        let policy = stance_json(&["policy", &w, "--db", &db, "-o", "json"]);
        let version =
            policy["version"].as_u64().unwrap_or_else(|| panic!("no version: {policy:#}")).to_string();
        let t1 = rfc3339_now();

        // A second normal run of the same kind: nothing to deny.
        run_once(s, &w, &dir, port, 1);
        settle();
        let t2 = rfc3339_now();
        let fp = would_deny(&w, &db, &version, &t1, Some(&t2));
        assert!(
            fp.is_empty(),
            "{}: a normal second run would be denied:\n{}",
            s.name,
            serde_json::to_string_pretty(&fp).unwrap()
        );

        // An attacker in the same workload: shell, /etc/shadow, an unusual port, the binary's directory.
        let bindir = Path::new(s.binary).parent().unwrap().display().to_string();
        let probe = format!("{bindir}/.stance-quality-{}", std::process::id());
        let evil_port = free_port();
        let script = format!(
            "cat /etc/shadow >/dev/null; (exec 3<>/dev/tcp/127.0.0.1/{evil_port}) 2>/dev/null; : >>{probe}; rm -f {probe}; true"
        );
        let st = Command::new(STANCE)
            .args(["launch", "--workload", &w, "--", "/bin/bash", "-c", &script])
            .status()
            .unwrap();
        assert!(st.success(), "attack script failed to run: {st}");
        let _ = std::fs::remove_file(&probe);
        settle();
        let denied = would_deny(&w, &db, &version, &t2, None);
        let text = serde_json::to_string(&denied).unwrap();
        for (what, needle) in [
            ("a shell", "/usr/bin/bash".to_owned()),
            ("reading /etc/shadow", "/etc/shadow".to_owned()),
            ("an unusual port", format!("127.0.0.1:{evil_port}/tcp")),
            ("writing into the binary's directory", probe.clone()),
        ] {
            assert!(
                text.contains(&needle),
                "{}: {what} ({needle}) is not denied by the replay: {text}",
                s.name
            );
        }

        let p = &policy["policy"];
        let len = |k: &str| p[k].as_array().map_or(0, Vec::len);
        let c = serde_json::json!({
            "process": len("executables"),
            "file": len("files"),
            "network": len("network") + len("unix"),
            "capabilities": len("capabilities"),
        });
        eprintln!("{}: version {version}, rules per domain {c}", s.name);
        counts.insert(s.name.to_owned(), c);
    }
    if let Ok(out) = std::env::var("STANCE_QUALITY_OUT") {
        std::fs::write(PathBuf::from(out), serde_json::to_string_pretty(&Value::Object(counts)).unwrap())
            .unwrap();
    }
    let _ = stance(&["workloads", "--db", &db]);
    d.stop();
}
