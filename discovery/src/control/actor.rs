//! The enforcement actor: the one task that owns the `Enforcer` and decides what is loaded into it.
//!
//! It takes `mode` commands (each with a oneshot reply) from the control socket and the cgroups the
//! pipeline's writer has just committed, one at a time, so the kernel, the database and its own
//! memory of what is loaded change together:
//!
//! * a `mode` request takes the workload's latest recommended policy version (made from its graph
//!   when it has none; `recommend::latest_or_new`), loads it with the new modes,
//!   and only then records modes and policy in the database. If recording fails, the kernel is put
//!   back to what the database says, so a restart never finds the two disagreeing.
//! * at start, every workload the database has in audit or enforce is loaded again with the policy
//!   stored for it (not recompiled: what is enforced must not widen with what was observed since).
//! * a cgroup of a loaded workload that the enforcer has not been given yet is added to it.

use std::{
    collections::{BTreeSet, HashMap},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use super::{
    one_line,
    protocol::{modes_text, ModeReply, Request, Response},
    ControlError,
};
use crate::{
    enforce::{Backend, Domain, EnforceError, Enforcer, Mode, Modes, Policy, Status},
    recommend,
    store::{PolicySource, Store, StoreError, WorkloadEnforcement},
};

/// Commands waiting for the actor. Requests come from people, one at a time in practice.
const COMMAND_QUEUE: usize = 16;

/// What the actor needs from an enforcer. `Enforcer` is the real one; tests drive the actor with a
/// recording fake, so its decisions are tested on machines without BPF-LSM.
pub trait Enforcement: Send {
    fn apply(
        &mut self,
        workload: &str,
        policy_id: u32,
        cgroups: &[u64],
        policy: &Policy,
        modes: Modes,
    ) -> Result<u32, EnforceError>;
    fn add_cgroup(&mut self, policy_id: u32, cgroup: u64) -> Result<(), EnforceError>;
    fn release(&mut self, policy_id: u32) -> Result<(), EnforceError>;
    /// The daemon stops. What is in force stays pinned in the kernel; with nothing in audit or
    /// enforce, nothing needs to outlive the daemon.
    fn stop(self: Box<Self>) {}
}

impl Enforcement for Enforcer {
    fn apply(
        &mut self,
        workload: &str,
        policy_id: u32,
        cgroups: &[u64],
        policy: &Policy,
        modes: Modes,
    ) -> Result<u32, EnforceError> {
        Enforcer::apply(self, workload, policy_id, cgroups, policy, modes)
    }
    fn add_cgroup(&mut self, policy_id: u32, cgroup: u64) -> Result<(), EnforceError> {
        Enforcer::add_cgroup(self, policy_id, cgroup)
    }
    fn release(&mut self, policy_id: u32) -> Result<(), EnforceError> {
        Enforcer::release(self, policy_id)
    }
    fn stop(self: Box<Self>) {
        if self.in_force() {
            info!("enforcement stays in force after the stop (pinned in bpffs)");
            return;
        }
        match Enforcer::remove_all(*self) {
            Ok(()) => info!("no workload in audit or enforce: the enforcer's pins are removed"),
            Err(e) => warn!(error = %e, "cannot remove the enforcer's pins"),
        }
    }
}

/// The status to report when the enforcer could not start at all: every domain unavailable, for
/// the same reason.
pub fn unavailable_status(reason: &str) -> Status {
    let un = || Backend::Unavailable(reason.to_owned());
    Status { process: un(), file: un(), network: un(), capabilities: un(), adopted: 0, notes: Vec::new() }
}

/// A request for the actor, with where its answer goes.
pub enum Command {
    Mode {
        workload: String,
        mode: Mode,
        domains: Vec<Domain>,
        reply: oneshot::Sender<Result<ModeReply, ControlError>>,
    },
}

/// The control socket's way to the actor. Cheap to clone: one per connection.
#[derive(Clone)]
pub struct ActorHandle {
    tx: mpsc::Sender<Command>,
}

impl ActorHandle {
    /// Runs one request and turns the outcome into its response.
    pub async fn request(&self, request: Request) -> Response {
        match request {
            Request::Mode { workload, mode, domains } => match self.mode(workload, mode, domains).await {
                Ok(reply) => Response::Mode(reply),
                Err(e) => Response::Error((&e).into()),
            },
        }
    }

    pub async fn mode(
        &self,
        workload: String,
        mode: Mode,
        domains: Vec<Domain>,
    ) -> Result<ModeReply, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Mode { workload, mode, domains, reply })
            .await
            .map_err(|_| ControlError::Stopping)?;
        answer.await.map_err(|_| ControlError::Stopping)?
    }
}

/// The handle and the queue `Actor::run` reads.
pub fn channel() -> (ActorHandle, mpsc::Receiver<Command>) {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    (ActorHandle { tx }, rx)
}

/// A workload whose policy is loaded.
struct Loaded {
    name: String,
    policy_id: u32,
    /// Cgroups the enforcer was given.
    cgroups: BTreeSet<u64>,
    modes: Modes,
    revision: u32,
    /// Kept to put it back if recording a newer one fails.
    policy: Policy,
}

pub struct Actor {
    store: Store,
    /// None when the enforcer could not start; `status` then says why, for every domain.
    enforcer: Option<Box<dyn Enforcement>>,
    status: Status,
    /// Where live cgroups are checked: a cgroup the database remembers may be gone.
    cgroup_mount: PathBuf,
    /// By workload id.
    loaded: HashMap<i64, Loaded>,
}

impl Actor {
    pub fn new(
        store: Store,
        enforcer: Option<Box<dyn Enforcement>>,
        status: Status,
        cgroup_mount: PathBuf,
    ) -> Actor {
        Actor { store, enforcer, status, cgroup_mount, loaded: HashMap::new() }
    }

    /// Loads again every workload the database has in audit or enforce, with its stored policy.
    /// Returns one line per workload, for the daemon's start-up report.
    pub async fn restore(&mut self) -> Result<Vec<String>, StoreError> {
        let mut lines = Vec::new();
        for w in self.store.enforced_workloads().await? {
            lines.push(match self.reload(&w).await {
                Ok(revision) => format!(
                    "enforcement of {}: restored, {} (policy revision {revision})",
                    w.name,
                    modes_text(w.modes)
                ),
                Err(e) => format!("enforcement of {}: not restored: {}", w.name, one_line(&e)),
            });
        }
        Ok(lines)
    }

    async fn reload(&mut self, w: &WorkloadEnforcement) -> Result<u32, ControlError> {
        self.check_available(w.modes)?;
        let (policy, source) = match &w.policy {
            Some(stored) => (stored.policy.clone(), stored.source),
            // Modes without a policy are not written by this daemon; load the recommended one
            // rather than leave the workload unenforced.
            None => Self::recommended(&self.store, &w.name).await?,
        };
        self.load(w, policy, source, w.modes).await
    }

    /// Serves commands and cgroup sightings until both channels are closed.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut sightings: mpsc::Receiver<Vec<(u64, String)>>,
    ) {
        let (mut commands_open, mut sightings_open) = (true, true);
        while commands_open || sightings_open {
            tokio::select! {
                cmd = commands.recv(), if commands_open => match cmd {
                    Some(Command::Mode { workload, mode, domains, reply }) => {
                        let _ = reply.send(self.set_mode(&workload, mode, &domains).await);
                    }
                    None => commands_open = false,
                },
                seen = sightings.recv(), if sightings_open => match seen {
                    Some(cgroups) => self.cgroups_seen(&cgroups),
                    None => sightings_open = false,
                },
            }
        }
        if let Some(enforcer) = self.enforcer.take() {
            enforcer.stop();
        }
    }

    /// Puts `domains` (all when empty) of `workload` into `mode`.
    pub async fn set_mode(
        &mut self,
        workload: &str,
        mode: Mode,
        domains: &[Domain],
    ) -> Result<ModeReply, ControlError> {
        let w = self.store.workload_enforcement(workload).await?;
        let mut modes = w.modes;
        for d in if domains.is_empty() { &Domain::ALL[..] } else { domains } {
            modes.set(*d, mode);
        }
        if modes.is_observe_only() {
            if self.release(&w).await? {
                info!(workload, "enforcement released");
            }
            return Ok(ModeReply { workload: w.name, modes, revision: None });
        }
        self.check_available(modes)?;
        let (policy, source) = Self::recommended(&self.store, workload).await?;
        let revision = self.load(&w, policy, source, modes).await?;
        info!(workload, revision, modes = %modes_text(modes), "policy loaded");
        Ok(ModeReply { workload: w.name, modes, revision: Some(revision) })
    }

    /// The workload's latest recommended policy version, made from its graph if it has none yet
    /// (later versions are made by `stance policy`, reviewed, and loaded by the next `mode`).
    /// (An associated function: the future holds only the store, not the enforcer, which is not Sync.)
    async fn recommended(store: &Store, workload: &str) -> Result<(Policy, PolicySource), ControlError> {
        let (version, policy) = recommend::latest_or_new(store, workload, &recommend::RealFs).await?;
        Ok((policy, PolicySource::Recommend { version }))
    }

    /// Every non-observe domain of `modes` must have a backend; otherwise nothing is changed.
    fn check_available(&self, modes: Modes) -> Result<(), ControlError> {
        let missing: Vec<(Domain, &str)> = Domain::ALL
            .into_iter()
            .filter(|d| modes.get(*d) != Mode::Observe)
            .filter_map(|d| match self.status.get(d) {
                Backend::Unavailable(reason) => Some((d, reason.as_str())),
                _ => None,
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let same_reason = missing.iter().all(|(_, r)| *r == missing[0].1);
        let reason = if same_reason {
            missing[0].1.to_owned()
        } else {
            missing.iter().map(|(d, r)| format!("{d}: {r}")).collect::<Vec<_>>().join("; ")
        };
        Err(ControlError::Unavailable { reason, domains: missing.into_iter().map(|(d, _)| d).collect() })
    }

    /// Loads `policy` with `modes` on the workload's live cgroups, then records both.
    async fn load(
        &mut self,
        w: &WorkloadEnforcement,
        policy: Policy,
        source: PolicySource,
        modes: Modes,
    ) -> Result<u32, ControlError> {
        let policy_id = policy_id(w)?;
        let Some(enforcer) = self.enforcer.as_mut() else {
            return Err(ControlError::Unavailable {
                reason: "the enforcer is not running".into(),
                domains: vec![],
            });
        };
        let cgroups = live_cgroups(&self.cgroup_mount, &w.cgroups);
        let list: Vec<u64> = cgroups.iter().copied().collect();
        let revision = enforcer.apply(&w.name, policy_id, &list, &policy, modes)?;
        if let Err(source) = self.store.record_enforcement(w, modes, Some((revision, &policy, source))).await
        {
            let put_back = match self.loaded.get_mut(&w.id) {
                Some(prev) => enforcer
                    .apply(&w.name, policy_id, &list, &prev.policy, prev.modes)
                    .map(|rev| prev.revision = rev),
                None => enforcer.release(policy_id),
            };
            if let Err(e) = put_back {
                error!(workload = w.name, error = %one_line(&e), "cannot put the previous policy back");
            }
            return Err(ControlError::NotRecorded { workload: w.name.clone(), source });
        }
        self.loaded
            .insert(w.id, Loaded { name: w.name.clone(), policy_id, cgroups, modes, revision, policy });
        Ok(revision)
    }

    /// Stops evaluating the workload, then records every domain as observe. Returns whether the
    /// enforcer was asked to release anything.
    async fn release(&mut self, w: &WorkloadEnforcement) -> Result<bool, ControlError> {
        // Also when this daemon did not load it: an earlier one may have, and its pins are adopted.
        let maybe_in_kernel = self.loaded.contains_key(&w.id) || !w.modes.is_observe_only();
        let released = match (maybe_in_kernel, self.enforcer.as_mut()) {
            (true, Some(enforcer)) => {
                enforcer.release(policy_id(w)?)?;
                true
            }
            _ => false,
        };
        let previous = self.loaded.remove(&w.id);
        if let Err(source) = self.store.record_enforcement(w, Modes::default(), None).await {
            if let (Some(mut prev), Some(enforcer)) = (previous, self.enforcer.as_mut()) {
                let list: Vec<u64> = prev.cgroups.iter().copied().collect();
                match enforcer.apply(&prev.name, prev.policy_id, &list, &prev.policy, prev.modes) {
                    Ok(rev) => {
                        prev.revision = rev;
                        self.loaded.insert(w.id, prev);
                    }
                    Err(e) => {
                        error!(workload = w.name, error = %one_line(&e), "cannot put the previous policy back")
                    }
                }
            }
            return Err(ControlError::NotRecorded { workload: w.name.clone(), source });
        }
        Ok(released)
    }

    /// Cgroups the pipeline has just committed, with their workload: those of loaded workloads that
    /// the enforcer does not have yet are added. A failure is retried at the next sighting.
    fn cgroups_seen(&mut self, cgroups: &[(u64, String)]) {
        let Some(enforcer) = self.enforcer.as_mut() else { return };
        for (cgroup, workload) in cgroups {
            let Some(w) = self.loaded.values_mut().find(|l| &l.name == workload) else { continue };
            if w.cgroups.contains(cgroup) {
                continue;
            }
            match enforcer.add_cgroup(w.policy_id, *cgroup) {
                Ok(()) => {
                    info!(workload, cgroup, "new cgroup enforced");
                    w.cgroups.insert(*cgroup);
                }
                Err(e) => error!(workload, cgroup, error = %one_line(&e), "cannot enforce on a new cgroup"),
            }
        }
    }
}

fn policy_id(w: &WorkloadEnforcement) -> Result<u32, ControlError> {
    u32::try_from(w.id).map_err(|_| ControlError::PolicyId { workload: w.name.clone(), id: w.id })
}

/// The cgroups that still exist: the directory is there and is the same cgroup (its inode is the id).
fn live_cgroups(mount: &Path, cgroups: &[(u64, String)]) -> BTreeSet<u64> {
    cgroups
        .iter()
        .filter(|(id, path)| {
            std::fs::metadata(mount.join(path.trim_start_matches('/'))).is_ok_and(|m| m.ino() == *id)
        })
        .map(|(id, _)| *id)
        .collect()
}

#[cfg(test)]
mod tests;
