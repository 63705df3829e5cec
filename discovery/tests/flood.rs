//! Root tier: more events than the reader can take. Losses must be counted, attributed to the
//! workload that caused them, stored, and the daemon must stay up.

mod common;

use std::{process::Command, time::Duration};

use common::*;

#[test]
fn flood_is_counted_per_workload_and_daemon_survives() {
    let tmp = TempDir::new("flood");
    // A tiny ring buffer, no in-kernel dedup and a one-slot queue: the reader cannot keep up.
    let daemon = Daemon::start(
        tmp.path(),
        "ringbuf_bytes = 4096\ndedup_window_ms = 0\nqueue_capacity = 1\nflush_interval_ms = 200\n",
    );
    let name = workload("flood");
    let st = Command::new(STANCE)
        .args(["launch", "--workload", &name, "--", "/usr/bin/python3", "-c"])
        .arg("import os\nfor i in range(50000):\n    os.close(os.open('/etc/hostname', os.O_RDONLY))")
        .status()
        .unwrap();
    assert!(st.success());
    let db = daemon.db.to_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let losses = loop {
        let list = stance_json(&["workloads", "--db", &db, "-o", "json"]);
        let w = list.as_array().unwrap().iter().find(|w| w["name"] == name.as_str()).cloned();
        let total = w.as_ref().and_then(|w| w["losses"]["total"].as_u64()).unwrap_or(0);
        if total > 0 || std::time::Instant::now() > deadline {
            break w.expect("flooding workload is listed");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let total = losses["losses"]["total"].as_u64().unwrap();
    assert!(total > 0, "losses were not counted: {losses:#}");
    let reasons = losses["losses"]["by_reason"].as_object().unwrap();
    assert!(
        reasons.keys().any(|r| r == "ringbuf-full" || r == "queue-full"),
        "unexpected reasons {reasons:?}"
    );
    // The flood's own file is still in the graph: losses never hide what did arrive.
    let g = stance_json(&["graph", &name, "--db", &db]);
    assert!(labels(&g, "file").contains(&"/etc/hostname".to_owned()));
    let mut daemon = daemon;
    assert!(daemon.is_running(), "daemon died under the flood");
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
}
