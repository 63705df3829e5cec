//! `stance run`: opens the store, loads the probes, starts the enforcer (or says why it cannot),
//! picks up what is already running, starts the pipeline and the control socket, and on
//! SIGINT/SIGTERM stops in an order that loses nothing already observed.

/// One line of the daemon's report on stdout. Whoever started the daemon may have closed that pipe
/// since (a test harness or shell that was killed): `println!` would then panic with EPIPE, mid-stop,
/// before the last flush. The report only informs; the daemon's work must not depend on anyone
/// reading it, so a line nobody can receive is dropped.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::Path,
    sync::{atomic::Ordering, Arc, Mutex},
};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::{
    api,
    config::Config,
    control::{
        actor::{self, Actor, Enforcement},
        one_line,
        server::{self, ControlSocket},
        verdicts,
    },
    enforce::{Domain, EnforceError, Enforcer, StartOptions},
    identity::{self, Resolver},
    model::{Batch, CgroupObs, ExecutableObs},
    pipeline::{self, Aggregator, Resolution},
    probes::{LoadOptions, Probes},
    store::Store,
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("stance run must run as root (loading BPF programs needs CAP_BPF and CAP_SYS_ADMIN)")]
    NotRoot,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Probes(#[from] crate::probes::ProbeError),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error(transparent)]
    Pipeline(#[from] pipeline::PipelineError),
    #[error("cannot install the signal handler")]
    Signal(#[source] std::io::Error),
    #[error("cannot poll the enforcement events ring buffer")]
    Verdicts(#[source] std::io::Error),
}

pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("STANCE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

pub async fn run(cfg: Config) -> Result<(), DaemonError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(DaemonError::NotRoot);
    }
    // The database first: a bad --db is reported before anything is loaded into the kernel.
    let store = Store::open(&cfg.db).await?;
    let mount = identity::cgroup2_mount()?;

    let mut probes = Probes::load(&LoadOptions {
        ringbuf_bytes: cfg.ringbuf_bytes,
        dedup_window_ns: cfg.dedup_window.as_nanos() as u64,
        argv_max: cfg.argv_bytes as u32,
        wakeup_bytes: u64::from(cfg.ringbuf_bytes / 8),
        self_tgid: std::process::id(),
    })?;
    say!("stance: observing this host (pid {}), cgroup2 at {}", std::process::id(), mount.display());
    for st in &probes.status {
        say!("  {st}");
    }
    let (enforcer, status) = start_enforcer(&mount, &cfg.pin_dir);
    for d in Domain::ALL {
        say!("  enforcement {d}: {}", status.get(d));
    }
    for note in &status.notes {
        say!("  enforcement: {note}");
    }
    let ringbuf = probes.take_ringbuf()?;
    let kernel_losses = probes.take_loss_counters()?;
    let dedup_maps = probes.take_dedup_maps()?;

    // Workloads that were running before the daemon: every cgroup and every running executable.
    let mut resolver = Resolver::new(mount.clone());
    let known = resolver.scan()?;
    let initial = tokio::task::block_in_place(|| running_processes(&mount, &mut resolver));
    info!(
        cgroups = known,
        workloads = initial.cgroups.len(),
        executables = initial.executables.len(),
        "picked up running workloads"
    );
    store.write_batch(&initial).await?;

    // Bound before any task is spawned: binding narrows the process's umask for a moment.
    let socket = ControlSocket::bind(&cfg.control_socket);

    // The enforcer's events, then the enforcer itself to the actor that owns it from now on.
    let (stop_tx, stop_rx) = watch::channel(false);
    let verdict_stats = Arc::new(verdicts::VerdictStats::default());
    let mut verdict_tasks = None;
    let enforcer = enforcer.map(|mut enforcer| {
        if let Some(ringbuf) = enforcer.take_verdicts() {
            let (tx, rx) = mpsc::channel(verdicts::QUEUE_BATCHES);
            // Verdict records → rows: the policy id is the workloads table id, boot time → unix time.
            let offset = pipeline::boot_to_unix_offset_ns();
            // The canary's own denies at start prove the programs work; they are no workload's.
            let decode = move |b: &[u8]| {
                crate::enforce::verdict::decode(b).map(|v| {
                    (v.policy_id != crate::enforce::CANARY_POLICY_ID).then(|| crate::store::VerdictRecord {
                        workload_id: i64::from(v.policy_id),
                        domain: v.domain,
                        deny: v.deny,
                        object: v.object,
                        actor: v.exe,
                        pid: v.tgid,
                        tid: v.pid,
                        cgroup_id: v.cgroup_id,
                        at: offset.saturating_add(v.boot_ns as i64),
                        truncated: v.truncated,
                        send: v.send,
                    })
                })
            };
            let reader = verdicts::run_reader(ringbuf, decode, tx, verdict_stats.clone(), stop_rx.clone());
            let writer = verdicts::run_writer(rx, store.clone(), verdict_stats.clone());
            verdict_tasks = Some((tokio::spawn(reader), tokio::spawn(writer)));
        }
        Box::new(enforcer) as Box<dyn Enforcement>
    });
    let enforcement_status = status.clone();
    let mut enforcement = Actor::new(store.clone(), enforcer, status, mount.clone());
    for line in enforcement.restore().await? {
        say!("  {line}");
    }
    let (control, commands) = actor::channel();
    let api_control = control.clone();
    let (seen_tx, seen_rx) = mpsc::channel(4);
    let enforcement = tokio::spawn(enforcement.run(commands, seen_rx));
    let control_server = match socket {
        Ok(socket) => {
            say!("  control: listening on {}", socket.path().display());
            Some(tokio::spawn(server::serve(socket, control, stop_rx.clone())))
        }
        Err(e) => {
            // Observation goes on; only `stance mode` cannot reach this daemon. The handle goes
            // now, so the actor still finishes at stop.
            say!("  control: unavailable: {}", one_line(&e));
            drop(control);
            None
        }
    };

    // The REST API and dashboard. Like the control socket, it is optional: observation goes on
    // without it.
    let stats = Arc::new(pipeline::ReaderStats::default());
    let sources = api::metrics::Sources::new(
        cfg.db.clone(),
        probes.status.clone(),
        enforcement_status,
        stats.clone(),
        verdict_tasks.is_some().then(|| verdict_stats.clone()),
    );
    let api_server = match start_api(&cfg, api_control, sources, stop_rx.clone()).await {
        Ok((line, server)) => {
            say!("  {line}");
            Some(server)
        }
        Err(e) => {
            say!("  api: unavailable: {}", one_line(&*e));
            None
        }
    };

    // Before the line that says the daemon is ready: a SIGTERM right after it must stop it cleanly,
    // not kill it.
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    say!("stance: writing to {}", cfg.db.display());
    say!(
        "stance: see workloads with `stance workloads --db {}`, a graph with `stance graph NAME --db {}`",
        cfg.db.display(),
        cfg.db.display()
    );

    let (ev_tx, ev_rx) = mpsc::channel(cfg.queue_capacity);
    let (win_tx, win_rx) = mpsc::channel(2);
    let (held_tx, held_rx) = oneshot::channel();
    let losses = Arc::new(pipeline::ReaderLosses::default());
    let resolution = Arc::new(Mutex::new(Resolution::new(resolver, Some(kernel_losses))));

    let reader = tokio::spawn(pipeline::run_reader(ringbuf, ev_tx, losses.clone(), stats.clone(), stop_rx));
    let aggregator = tokio::spawn(pipeline::run_aggregator(
        ev_rx,
        Aggregator::new(pipeline::boot_to_unix_offset_ns(), cfg.argv_bytes),
        losses,
        win_tx,
        cfg.flush_interval,
        cfg.max_pending_edges,
        held_rx,
    ));
    let mut writer = tokio::spawn(pipeline::run_writer(win_rx, store, resolution, seen_tx));

    let early_exit = tokio::select! {
        _ = sigterm.recv() => None,
        _ = sigint.recv() => None,
        res = &mut writer => Some(res),
    };
    if let Some(res) = early_exit {
        // The writer only ends early on a persistent database failure.
        let err = match res {
            Ok(Err(e)) => e,
            Ok(Ok(_)) => unreachable!("writer ended while the aggregator was running"),
            Err(j) => pipeline::PipelineError::Join(j),
        };
        return Err(err.into());
    }
    say!("stance: stopping; flushing what was observed");
    // Detach first so nothing new arrives, then drain and flush in order.
    drop(probes);
    let _ = stop_tx.send(true);
    reader.await.map_err(pipeline::PipelineError::Join)??;
    // Every record is in the aggregator's queue now, so it knows every key that was emitted; the
    // repeats the kernel suppressed since each key's last record go to the last window with them.
    // The drain above has given any program still running at detach time far longer than it takes
    // to finish, so the maps no longer change.
    match tokio::task::block_in_place(|| dedup_maps.held_repeats()) {
        Ok(held) => {
            let total: u64 = held.values().sum();
            info!(keys = held.len(), repeats = total, "adding the repeats the kernel still held");
            let _ = held_tx.send(held);
        }
        Err(e) => {
            warn!(error = %one_line(&e), "cannot read the repeats the kernel still held; they are not counted")
        }
    }
    aggregator.await.map_err(pipeline::PipelineError::Join)?;
    let store = writer.await.map_err(pipeline::PipelineError::Join)??;
    // The control server stopped with the others; once the writer has dropped its sender, the actor
    // finishes and drops the enforcer. What it loaded stays pinned in the kernel.
    if let Some(server) = control_server {
        server.await.map_err(pipeline::PipelineError::Join)?;
    }
    // The API holds a handle on the actor too: it must be gone before the actor can finish.
    if let Some(server) = api_server {
        server.await.map_err(pipeline::PipelineError::Join)?;
    }
    enforcement.await.map_err(pipeline::PipelineError::Join)?;
    if let Some((reader, writer)) = verdict_tasks {
        reader.await.map_err(pipeline::PipelineError::Join)?.map_err(DaemonError::Verdicts)?;
        writer.await.map_err(pipeline::PipelineError::Join)?;
    }
    store.close().await;
    let dropped = stats.dropped.load(Ordering::Relaxed);
    if dropped > 0 {
        warn!(dropped, "events were dropped while the pipeline was behind (recorded as queue-full losses)");
    }
    if let Some(losses) = verdict_stats.losses() {
        warn!("{losses}");
    }
    say!("stance: stopped; {} events received", stats.received.load(Ordering::Relaxed));
    Ok(())
}

/// Opens the API's read-only connection and token, binds its address, and starts serving. Returns
/// the line for the start-up report.
async fn start_api(
    cfg: &Config,
    control: actor::ActorHandle,
    sources: api::metrics::Sources,
    stop: watch::Receiver<bool>,
) -> Result<(String, tokio::task::JoinHandle<()>), Box<dyn std::error::Error>> {
    let token_path = api::auth::token_path(&cfg.db);
    let token = api::auth::load_or_create(&token_path)?;
    let listener = api::Listener::bind(cfg.listen, cfg.tls.as_ref()).await?;
    let store = Store::open_read_only(&cfg.db).await?;
    let versions = Store::open_for_review(&cfg.db).await?;
    let state = api::ApiState {
        store,
        versions,
        readiness: cfg.readiness,
        control: Some(control),
        token: Arc::new(token),
        metrics: Arc::new(sources),
        graphs: Default::default(),
    };
    let line = format!("api: listening on {} (token in {})", listener.url(), token_path.display());
    let app = api::router(state, &cfg.web_dir);
    Ok((line, tokio::spawn(listener.serve(app, stop))))
}

/// Starts the enforcer; when it cannot start at all, every domain is reported unavailable with the
/// reason, and the daemon goes on observing.
fn start_enforcer(mount: &Path, pin_dir: &Path) -> (Option<Enforcer>, crate::enforce::Status) {
    let mut opts = StartOptions::new(std::process::id(), mount.to_owned());
    opts.pin_dir = pin_dir.to_owned();
    match Enforcer::start(&opts) {
        Ok((enforcer, status)) => (Some(enforcer), status),
        Err(e) => {
            let reason = match e {
                EnforceError::Unavailable(reason) => reason,
                other => one_line(&other),
            };
            (None, actor::unavailable_status(&reason))
        }
    }
}

/// Reads /proc once at start: each process's cgroup and executable. This is the only place paths
/// come from userspace, and only for what ran before the probes were attached.
fn running_processes(mount: &Path, resolver: &mut Resolver) -> Batch {
    let now = pipeline::unix_now_ns();
    let mut batch = Batch::default();
    let mut by_path: HashMap<String, String> = HashMap::new();
    let Ok(all) = procfs::process::all_processes() else {
        return batch;
    };
    for proc in all.flatten() {
        if proc.pid() as u32 == std::process::id() {
            continue;
        }
        let Ok(cgroups) = proc.cgroups() else { continue };
        let Some(v2) = cgroups.0.iter().find(|c| c.hierarchy == 0) else { continue };
        let workload = match by_path.get(&v2.pathname) {
            Some(w) => w.clone(),
            None => {
                let Ok(meta) = std::fs::metadata(mount.join(v2.pathname.trim_start_matches('/'))) else {
                    continue;
                };
                let id = meta.ino();
                resolver.learn(id, v2.pathname.clone());
                let (path, identity) = resolver.resolve(id);
                let name = identity.name.clone();
                batch.cgroups.push(CgroupObs { cgroup_id: id, path, identity, seen_at: now });
                by_path.insert(v2.pathname.clone(), name.clone());
                name
            }
        };
        let Ok(exe) = proc.exe() else { continue };
        let Ok(meta) = std::fs::metadata(&exe) else { continue };
        let argv = proc.cmdline().ok().map(|a| a.join(" ")).filter(|s| !s.is_empty());
        batch.executables.push(ExecutableObs {
            workload,
            path: exe.to_string_lossy().into_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
            memfd: false,
            argv,
        });
    }
    batch
}
