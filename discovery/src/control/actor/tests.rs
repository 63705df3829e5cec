//! The actor's decisions against a real SQLite file and a recording fake enforcer.

use std::{
    os::unix::fs::MetadataExt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use super::*;
use crate::{
    control::protocol::{ErrorKind, ErrorReply},
    model::{Batch, CgroupObs, EdgeKey, EdgeKind, EdgeStats, Identity, NodeKind, NodeRef, WorkloadKind},
};

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Apply { policy_id: u32, cgroups: Vec<u64>, policy: Policy, modes: Modes },
    Add { policy_id: u32, cgroup: u64 },
    Release { policy_id: u32 },
}

/// Records every call; revisions count up from 1; `refuse` makes `apply` fail as a policy too large.
#[derive(Clone, Default)]
struct Fake {
    calls: Arc<Mutex<Vec<Call>>>,
    refuse: Arc<AtomicBool>,
}

impl Fake {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

impl Enforcement for Fake {
    fn apply(
        &mut self,
        workload: &str,
        policy_id: u32,
        cgroups: &[u64],
        policy: &Policy,
        modes: Modes,
    ) -> Result<u32, EnforceError> {
        if self.refuse.load(Ordering::Relaxed) {
            return Err(EnforceError::TooLarge {
                workload: workload.into(),
                what: "file rules",
                needed: 9,
                free: 1,
            });
        }
        let mut calls = self.calls.lock().unwrap();
        calls.push(Call::Apply { policy_id, cgroups: cgroups.to_vec(), policy: policy.clone(), modes });
        Ok(calls.iter().filter(|c| matches!(c, Call::Apply { .. })).count() as u32)
    }
    fn add_cgroup(&mut self, policy_id: u32, cgroup: u64) -> Result<(), EnforceError> {
        self.calls.lock().unwrap().push(Call::Add { policy_id, cgroup });
        Ok(())
    }
    fn release(&mut self, policy_id: u32) -> Result<(), EnforceError> {
        self.calls.lock().unwrap().push(Call::Release { policy_id });
        Ok(())
    }
}

/// This machine's situation once the enforcer lands: no BPF-LSM, network through sock_addr programs.
fn network_only() -> Status {
    let no_lsm = || Backend::Unavailable("BPF-LSM is not active".into());
    Status {
        process: no_lsm(),
        file: no_lsm(),
        network: Backend::CgroupSockAddr,
        capabilities: no_lsm(),
        adopted: 0,
        notes: Vec::new(),
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    store: Store,
    /// Stands in for the cgroup2 mount: `stance/web` exists, `stance/gone` does not.
    mount: PathBuf,
    web_cgroup: u64,
    gone_cgroup: u64,
}

const T0: i64 = 1_700_000_000_000_000_000;

fn identity(name: &str) -> Identity {
    Identity {
        name: name.into(),
        kind: WorkloadKind::Launched,
        runtime: None,
        container_id: None,
        unit: None,
        pod_uid: None,
    }
}

fn connect(workload: &str, endpoint: &str) -> (EdgeKey, EdgeStats) {
    (
        EdgeKey {
            workload: workload.into(),
            kind: EdgeKind::Connect,
            source: NodeRef::new(NodeKind::Executable, "/usr/bin/curl"),
            target: NodeRef::new(NodeKind::Endpoint, endpoint),
            access: "tcp".into(),
            result: "ok".into(),
        },
        EdgeStats { count: 1, first_seen: T0, last_seen: T0 },
    )
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("cgroup");
    std::fs::create_dir_all(mount.join("stance/web")).unwrap();
    let web_cgroup = std::fs::metadata(mount.join("stance/web")).unwrap().ino();
    let gone_cgroup = web_cgroup + 1_000_000;
    let store = Store::open(&dir.path().join("stance.db")).await.unwrap();
    let cg = |id, path: &str, name| CgroupObs {
        cgroup_id: id,
        path: path.into(),
        identity: identity(name),
        seen_at: T0,
    };
    store
        .write_batch(&Batch {
            cgroups: vec![
                cg(web_cgroup, "/stance/web", "web"),
                cg(gone_cgroup, "/stance/gone", "web"),
                cg(7, "/stance/db", "db"),
            ],
            edges: vec![connect("web", "127.0.0.1:8080/tcp")],
            ..Batch::default()
        })
        .await
        .unwrap();
    Setup { _dir: dir, store, mount, web_cgroup, gone_cgroup }
}

fn actor(s: &Setup, fake: Option<&Fake>, status: Status) -> Actor {
    let enforcer = fake.map(|f| Box::new(f.clone()) as Box<dyn Enforcement>);
    Actor::new(s.store.clone(), enforcer, status, s.mount.clone())
}

#[tokio::test]
async fn without_an_enforcer_audit_fails_and_nothing_is_recorded() {
    let s = setup().await;
    let mut a = actor(&s, None, unavailable_status("the enforcer is not built yet"));
    let err = a.set_mode("web", Mode::Audit, &[]).await.unwrap_err();
    assert_eq!(err.to_string(), "enforcement unavailable: the enforcer is not built yet");
    assert_eq!(ErrorReply::from(&err).kind, ErrorKind::Unavailable);
    let state = s.store.workload_enforcement("web").await.unwrap();
    assert_eq!((state.modes, state.policy), (Modes::default(), None));

    // Observe needs no enforcer.
    let reply = a.set_mode("web", Mode::Observe, &[Domain::File]).await.unwrap();
    assert_eq!((reply.modes, reply.revision), (Modes::default(), None));

    let err = a.set_mode("nope", Mode::Enforce, &[]).await.unwrap_err();
    assert_eq!(err.to_string(), "unknown workload 'nope' (see `stance workloads`)");
}

#[tokio::test]
async fn only_domains_with_a_backend_can_be_audited_and_nothing_is_half_applied() {
    let s = setup().await;
    let fake = Fake::default();
    let mut a = actor(&s, Some(&fake), network_only());
    let err = a.set_mode("web", Mode::Audit, &[]).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "enforcement unavailable: BPF-LSM is not active (for process, file, capabilities)"
    );
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    assert_eq!(s.store.workload_enforcement("web").await.unwrap().modes, Modes::default());

    let reply = a.set_mode("web", Mode::Audit, &[Domain::Network]).await.unwrap();
    let mut want = Modes::default();
    want.set(Domain::Network, Mode::Audit);
    assert_eq!((reply.modes, reply.revision), (want, Some(1)));
    let [Call::Apply { policy_id, cgroups, policy, modes }] = &fake.calls()[..] else {
        panic!("{:?}", fake.calls())
    };
    let state = s.store.workload_enforcement("web").await.unwrap();
    assert_eq!(i64::from(*policy_id), state.id);
    assert_eq!(cgroups, &[s.web_cgroup], "the cgroup that no longer exists ({}) is left out", s.gone_cgroup);
    assert_eq!(policy.network.len(), 1);
    assert_eq!(policy.network[0].net.to_string(), "127.0.0.1/32");
    assert_eq!(*modes, want);
    // Recorded: the modes, and the policy that was loaded.
    assert_eq!(state.modes, want);
    assert_eq!(state.policy.as_ref().map(|p| (p.revision, &p.policy)), Some((1, policy)));
}

#[tokio::test]
async fn a_refused_policy_changes_nothing() {
    let s = setup().await;
    let fake = Fake::default();
    let mut a = actor(&s, Some(&fake), network_only());
    fake.refuse.store(true, Ordering::Relaxed);
    let err = a.set_mode("web", Mode::Enforce, &[Domain::Network]).await.unwrap_err();
    assert_eq!(ErrorReply::from(&err).kind, ErrorKind::Rejected);
    assert!(err.to_string().contains("does not fit"), "{err}");
    let state = s.store.workload_enforcement("web").await.unwrap();
    assert_eq!((state.modes, state.policy), (Modes::default(), None));
}

#[tokio::test]
async fn a_restart_reloads_the_stored_policy_not_a_recompiled_one() {
    let s = setup().await;
    let fake = Fake::default();
    let mut a = actor(&s, Some(&fake), network_only());
    a.set_mode("web", Mode::Enforce, &[Domain::Network]).await.unwrap();
    let Call::Apply { policy: loaded, .. } = fake.calls()[0].clone() else { panic!() };

    // Observed after the policy was loaded: must not widen what a restart enforces.
    s.store
        .write_batch(&Batch { edges: vec![connect("web", "10.9.9.9:22/tcp")], ..Batch::default() })
        .await
        .unwrap();
    let after = Fake::default();
    let mut restarted = actor(&s, Some(&after), network_only());
    let lines = restarted.restore().await.unwrap();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("enforcement of web: restored, process=observe file=observe network=enforce"),
        "{lines:?}"
    );
    let [Call::Apply { policy, modes, .. }] = &after.calls()[..] else { panic!("{:?}", after.calls()) };
    assert_eq!(policy, &loaded);
    assert_eq!(modes.network, Mode::Enforce);

    // Where enforcement is unavailable after the restart, the workload says so and stays recorded.
    let mut crippled = actor(&s, None, unavailable_status("no BPF"));
    let lines = crippled.restore().await.unwrap();
    assert_eq!(lines, ["enforcement of web: not restored: enforcement unavailable: no BPF (for network)"]);
    assert_eq!(s.store.workload_enforcement("web").await.unwrap().modes.network, Mode::Enforce);
}

#[tokio::test]
async fn observe_everywhere_releases() {
    let s = setup().await;
    let fake = Fake::default();
    let mut a = actor(&s, Some(&fake), network_only());
    a.set_mode("web", Mode::Audit, &[Domain::Network]).await.unwrap();
    let reply = a.set_mode("web", Mode::Observe, &[]).await.unwrap();
    assert_eq!((reply.modes, reply.revision), (Modes::default(), None));
    let id = s.store.workload_enforcement("web").await.unwrap().id as u32;
    assert_eq!(fake.calls().last(), Some(&Call::Release { policy_id: id }));
    assert!(s.store.enforced_workloads().await.unwrap().is_empty());
}

#[tokio::test]
async fn new_cgroups_of_loaded_workloads_are_added_once() {
    let s = setup().await;
    let fake = Fake::default();
    let a = actor(&s, Some(&fake), network_only());
    let (handle, commands) = channel();
    let (seen_tx, seen_rx) = mpsc::channel(4);
    let task = tokio::spawn(a.run(commands, seen_rx));

    let reply = handle.mode("web".into(), Mode::Audit, vec![Domain::Network]).await.unwrap();
    assert_eq!(reply.revision, Some(1));
    seen_tx.send(vec![(501, "web".into()), (s.web_cgroup, "web".into()), (7, "db".into())]).await.unwrap();
    seen_tx.send(vec![(501, "web".into())]).await.unwrap();
    drop((handle, seen_tx));
    task.await.unwrap();

    let id = s.store.workload_enforcement("web").await.unwrap().id as u32;
    let adds: Vec<Call> = fake.calls().into_iter().filter(|c| matches!(c, Call::Add { .. })).collect();
    assert_eq!(
        adds,
        [Call::Add { policy_id: id, cgroup: 501 }],
        "already-given, other workloads' and repeated cgroups are not added"
    );
}

#[tokio::test]
async fn requests_through_the_handle_become_responses() {
    let s = setup().await;
    let a = actor(&s, None, unavailable_status("no BPF"));
    let (handle, commands) = channel();
    let (_seen_tx, seen_rx) = mpsc::channel(1);
    tokio::spawn(a.run(commands, seen_rx));
    let resp =
        handle.request(Request::Mode { workload: "x".into(), mode: Mode::Audit, domains: vec![] }).await;
    let Response::Error(e) = resp else { panic!("{resp:?}") };
    assert_eq!(e.kind, ErrorKind::UnknownWorkload);
}
