//! `/metrics` (Prometheus text format), `/healthz` and `/readyz`.
//!
//! Values are read when scraped — the daemon's counters, the database, the file size — into a
//! registry built for that scrape, so nothing on the event path ever waits for a metric.

use std::{
    path::PathBuf,
    sync::{atomic::Ordering, Arc, Mutex},
    time::Instant,
};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use serde_json::json;

use super::{
    workloads::{EnforcementView, HostStatus, ProbeView},
    ApiError, ApiState,
};
use crate::{
    control::verdicts::VerdictStats,
    enforce::{Backend, Domain, Mode, Status},
    pipeline::ReaderStats,
    probes::FamilyStatus,
    store::StoreError,
};

/// What the daemon hands the API to report.
pub struct Sources {
    /// The database file (and its `-wal`), for the size.
    pub db: PathBuf,
    pub probes: Vec<FamilyStatus>,
    pub enforcement: Status,
    /// Events the ring-buffer reader received and dropped.
    pub reader: Arc<ReaderStats>,
    /// Deny / would-deny records; None without an enforcer.
    pub verdicts: Option<Arc<VerdictStats>>,
    /// (when, events received then) at the previous scrape: the rate is over the scrape interval.
    last: Mutex<(Instant, u64)>,
}

impl Sources {
    pub fn new(
        db: PathBuf,
        probes: Vec<FamilyStatus>,
        enforcement: Status,
        reader: Arc<ReaderStats>,
        verdicts: Option<Arc<VerdictStats>>,
    ) -> Sources {
        let received = reader.received.load(Ordering::Relaxed);
        Sources { db, probes, enforcement, reader, verdicts, last: Mutex::new((Instant::now(), received)) }
    }

    /// Events per second since the previous call (the previous scrape).
    fn events_per_second(&self, received: u64) -> f64 {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let (at, count) = *last;
        let secs = at.elapsed().as_secs_f64();
        *last = (Instant::now(), received);
        if secs <= 0.0 {
            return 0.0;
        }
        received.saturating_sub(count) as f64 / secs
    }

    pub fn host_status(&self) -> HostStatus {
        HostStatus {
            probes: self
                .probes
                .iter()
                .map(|p| ProbeView {
                    family: p.family.to_owned(),
                    active: p.is_active(),
                    detail: p.to_string(),
                })
                .collect(),
            enforcement: Domain::ALL
                .into_iter()
                .map(|d| {
                    let backend = self.enforcement.get(d);
                    EnforcementView {
                        domain: d,
                        available: !matches!(backend, Backend::Unavailable(_)),
                        backend: backend.to_string(),
                    }
                })
                .collect(),
        }
    }

    fn db_bytes(&self) -> u64 {
        let mut wal = self.db.clone().into_os_string();
        wal.push("-wal");
        [self.db.clone(), PathBuf::from(wal)]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
}

type Labels = Vec<(String, String)>;

fn label(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// The Prometheus text exposition of everything `Sources` and the database say now.
pub async fn render(state: &ApiState) -> Result<String, StoreError> {
    let src = &state.metrics;
    let mut reg = Registry::with_prefix("stance");

    let received = src.reader.received.load(Ordering::Relaxed);
    let events = Counter::<u64>::default();
    events.inc_by(received);
    reg.register("events_received", "Events read from the kernel's ring buffer", events);
    let rate = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    rate.set(src.events_per_second(received));
    reg.register("events_per_second", "Events received per second since the previous scrape", rate);

    // Losses as stored (per reason, every workload and unattributed), plus what the reader dropped
    // and the aggregator has not flushed yet is already counted there within a flush interval.
    let losses = Family::<Labels, Counter<u64>>::default();
    let mut by_reason = src_losses(state).await?;
    by_reason.sort();
    for (reason, n) in by_reason {
        losses.get_or_create(&label(&[("reason", &reason)])).inc_by(n);
    }
    reg.register("observations_lost", "Observations lost, by reason", losses);
    if let Some(v) = &src.verdicts {
        let lost = Family::<Labels, Counter<u64>>::default();
        for (reason, c) in [
            ("malformed", &v.malformed),
            ("queue-full", &v.dropped),
            ("unknown-workload", &v.unknown_workload),
            ("not-written", &v.not_written),
        ] {
            lost.get_or_create(&label(&[("reason", reason)])).inc_by(c.load(Ordering::Relaxed));
        }
        reg.register("enforcement_events_lost", "Deny / would-deny records lost, by reason", lost);
        let stored = Counter::<u64>::default();
        stored.inc_by(v.stored.load(Ordering::Relaxed));
        reg.register("enforcement_events_stored", "Deny / would-deny records stored", stored);
    }

    let probes = Family::<Labels, Gauge>::default();
    for p in &src.probes {
        probes.get_or_create(&label(&[("family", p.family)])).set(i64::from(p.is_active()));
    }
    reg.register("probe_active", "1 when a probe family is attached", probes);

    let enforcement = Family::<Labels, Gauge>::default();
    for d in Domain::ALL {
        let backend = match src.enforcement.get(d) {
            Backend::BpfLsm => "bpf-lsm",
            Backend::CgroupSockAddr => "cgroup-sock-addr",
            Backend::Unavailable(_) => "unavailable",
        };
        let available = !matches!(src.enforcement.get(d), Backend::Unavailable(_));
        enforcement
            .get_or_create(&label(&[("domain", d.as_str()), ("backend", backend)]))
            .set(i64::from(available));
    }
    reg.register("enforcement_available", "1 when a domain can be audited and enforced", enforcement);

    let size: Gauge = Gauge::default();
    size.set(i64::try_from(src.db_bytes()).unwrap_or(i64::MAX));
    reg.register("database_bytes", "Size of the database and its write-ahead log", size);

    let per_mode = Family::<Labels, Gauge>::default();
    for ((domain, mode), n) in workloads_per_mode(state).await? {
        per_mode.get_or_create(&label(&[("domain", domain.as_str()), ("mode", mode.as_str())])).set(n);
    }
    reg.register("workloads", "Workloads per domain and mode", per_mode);

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    Ok(out)
}

async fn src_losses(state: &ApiState) -> Result<Vec<(String, u64)>, StoreError> {
    let mut totals: std::collections::BTreeMap<String, u64> = Default::default();
    let mut add = |summary: &crate::store::LossSummary| {
        for (r, n) in &summary.by_reason {
            *totals.entry(r.as_str().to_owned()).or_default() += n;
        }
    };
    for w in state.store.workloads().await? {
        add(&w.losses);
    }
    add(&state.store.unattributed_losses().await?);
    Ok(totals.into_iter().collect())
}

async fn workloads_per_mode(state: &ApiState) -> Result<Vec<((Domain, Mode), i64)>, StoreError> {
    let total = i64::try_from(state.store.workloads().await?.len()).unwrap_or(i64::MAX);
    let enforced = state.store.enforced_workloads().await?;
    let mut out = Vec::new();
    for d in Domain::ALL {
        let count = |m: Mode| enforced.iter().filter(|w| w.modes.get(d) == m).count() as i64;
        let (audit, enforce) = (count(Mode::Audit), count(Mode::Enforce));
        out.push(((d, Mode::Observe), total - audit - enforce));
        out.push(((d, Mode::Audit), audit));
        out.push(((d, Mode::Enforce), enforce));
    }
    Ok(out)
}

/// `GET /metrics`
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, content_type = "text/plain", body = String, description = "Prometheus text format")))]
pub async fn prometheus(State(state): State<ApiState>) -> Response {
    match render(&state).await {
        Ok(text) => {
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
        }
        Err(e) => ApiError::internal(&e).into_response(),
    }
}

/// `GET /healthz`: the process serves requests.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, body = Object, description = "{\"status\":\"ok\"}")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, body = Object, description = "{\"status\":\"ready\"}"),
        (status = 503, body = super::ErrorBody)))]
pub async fn readyz(State(state): State<ApiState>) -> Response {
    match state.store.unattributed_losses().await {
        Ok(_) => Json(json!({ "status": "ready" })).into_response(),
        Err(e) => {
            let mut resp = ApiError::internal(&e).into_response();
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            resp
        }
    }
}
