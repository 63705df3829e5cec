//! Enforcement: Stance's own BPF-LSM programs, scoped to the workloads put into audit or enforce.
//!
//! Data flow: a `policy::Policy` (compiled from the behaviour graph, later from the recommender)
//! and per-domain `policy::Modes` → `Enforcer::apply` writes the rules of a new revision into the
//! pinned BPF maps and swaps each of the workload's cgroups to it atomically → the LSM hooks decide
//! from kernel objects → deny / would-deny records come back through a ring buffer (`verdict`).
//!
//! Layout: `rules` turns a policy into map entries (pure), `matcher` replays the kernel's decisions
//! on the same entries (for policy checks), `hash` is the keyed path hash both sides
//! compute, `maps` writes and deletes revisions, `pin` keeps programs and maps in bpffs across
//! daemon restarts, `canary` proves at start that the programs really deny, `verdict` decodes
//! records. The kernel side is `probes-ebpf/src/enforce.bpf.c`; the shared layouts are
//! `probes-ebpf/include/stance_enforce.h` (`abi`).

//!
//! What each domain decides, and where (all from kernel objects inside LSM hooks):
//!
//! - **file** (`file_open`, which io_uring's OPENAT and every open syscall reach): the opened file's
//!   path, resolved in the kernel; exact rules, recursive directory rules that cover the directory
//!   itself and everything under it, and one-level directory rules (`children`) that cover its direct
//!   children only (not the directory itself, nothing deeper); read, write (O_CREAT and O_TRUNC need
//!   write). On procfs, all-digit names (pids, tids) are looked up as `*`, so `/proc/*/stat` covers
//!   every process; a `*` anywhere else in a rule is refused. Deny reports show procfs paths in that
//!   form too (`/proc/*/status`). Opens the kernel makes
//!   for exec (the binary, its ELF interpreter) are the process domain's. Objects with no path in any
//!   mount (pipes, sockets, memfds reopened through /proc/self/fd) are allowed: only a holder can
//!   reach them. A denied O_CREAT may leave an empty file (the hook runs after creation). Repeated
//!   opens of a file with one link are answered from a cache keyed by inode and mount under the
//!   revision: a file renamed after it was first opened keeps that decision until the next update.
//! - **process** (`bprm_check_security`, `ptrace_access_check`): the binary the kernel opened
//!   (`memfd:NAME` for anonymous ones), with device and inode where the rule has them; for a script,
//!   the interpreter it names is what is checked. A rule with `from` (fromSource) allows the binary
//!   only when the process calling execve runs one of those executables (by path or `memfd:NAME`). Ptrace (and /proc/PID access to other processes)
//!   only within the workload, if the policy says so.
//! - **network** (`socket_connect`, `socket_sendmsg` with a destination, `unix_stream_connect`,
//!   `unix_may_send`): IPv4/IPv6 destinations from the kernel's copy of the address, IPv4-mapped
//!   IPv6 matched as IPv4 (NAT64 and 6to4 are not translated); unix sockets by the peer the kernel
//!   found (its bound path, or `@name`), so symlinks and relative paths cannot dress one up as
//!   another. Other address families are not governed.
//! - **capabilities** (`capable`): checks of the task's own credentials only. Checks the kernel
//!   marks not to audit (CAP_OPT_NOAUDIT, PTRACE_MODE_NOAUDIT) are decided the same way (they are
//!   real privilege decisions), and reported with `noaudit` set so callers may quieten them.
//! - A cgroup a workload creates inside its own inherits its policy in the kernel at mkdir; a
//!   process of an audited/enforced workload may not move tasks into a cgroup outside it (needs
//!   BPF-LSM).
//!
//! Paths that cannot be resolved in full are never allowed. Verdict reporting is rate limited per
//! object (`StartOptions::verdict_window`) and never changes a decision.

pub mod abi;
mod attach;
mod canary;
pub mod compile;
pub mod hash;
pub mod maps;
pub mod matcher;
pub mod pin;
pub mod policy;
pub mod rules;
pub mod verdict;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::PathBuf,
    time::Duration,
};

use aya::{
    maps::{MapData, RingBuf},
    programs::links::PinnedLink,
    Btf, Ebpf, EbpfError, EbpfLoader,
};

pub use policy::{Domain, Mode, Modes, Policy};
pub use verdict::CANARY_POLICY_ID;

use hash::HashKeys;
use maps::{KernelMaps, RevEntries, Usage};
use pin::PinLayout;

/// The enforcement object, compiled by build.rs from probes-ebpf/src/enforce.bpf.c.
static ENFORCE_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enforce.bpf.o"));

#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error("enforcement unavailable: {0}")]
    Unavailable(String),
    #[error("policy of workload {workload} does not fit the kernel maps: {what} needs {needed} entries, {free} are free")]
    TooLarge { workload: String, what: &'static str, needed: usize, free: usize },
    #[error("updating the kernel maps for workload {workload} failed; the previous policy stays in force")]
    Update {
        workload: String,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("policy of workload {workload} cannot be enforced; the previous policy stays in force")]
    Invalid {
        workload: String,
        #[source]
        source: rules::RuleError,
    },
    #[error("no policy {0} is loaded")]
    UnknownPolicy(u32),
    #[error("cannot load the enforcement programs")]
    Load(#[source] EbpfError),
    #[error("the enforcement object has no map {0}")]
    MissingMap(&'static str),
    #[error("enforcement map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("cannot pin enforcement state at {path}")]
    Pin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pinned enforcement state at {path} cannot be used: {reason}")]
    PinnedState { path: PathBuf, reason: String },
    #[error("another Stance enforcer is using the pinned state at {path}")]
    Busy { path: PathBuf },
    #[error("cannot attach the enforcement program {program}: {reason}")]
    Attach { program: &'static str, reason: String },
}

/// How each domain is enforced on this kernel, as the daemon reports it at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// BPF-LSM hooks, proven by the start-up canary.
    BpfLsm,
    /// cgroup connect4/connect6/sendmsg4/sendmsg6 programs (network only, where BPF-LSM is not).
    CgroupSockAddr,
    /// Not enforceable here, with the reason.
    Unavailable(String),
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::BpfLsm => f.write_str("bpf-lsm"),
            Backend::CgroupSockAddr => f.write_str("cgroup sock_addr programs"),
            Backend::Unavailable(r) => write!(f, "unavailable: {r}"),
        }
    }
}

/// Enforcement status per domain.
#[derive(Debug, Clone)]
pub struct Status {
    pub process: Backend,
    pub file: Backend,
    pub network: Backend,
    pub capabilities: Backend,
    /// Policies found pinned by an earlier daemon and kept in force (0 on a fresh start).
    pub adopted: usize,
    /// Things worth a log line (a link that could not be pinned, a previous program kept, ...).
    pub notes: Vec<String>,
}

impl Status {
    pub fn get(&self, d: Domain) -> &Backend {
        match d {
            Domain::Process => &self.process,
            Domain::File => &self.file,
            Domain::Network => &self.network,
            Domain::Capabilities => &self.capabilities,
        }
    }

    fn set(&mut self, d: Domain, b: Backend) {
        match d {
            Domain::Process => self.process = b,
            Domain::File => self.file = b,
            Domain::Network => self.network = b,
            Domain::Capabilities => self.capabilities = b,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in Domain::ALL.into_iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            match self.get(d) {
                Backend::Unavailable(r) => write!(f, "{d}: enforcement unavailable: {r}")?,
                b => write!(f, "{d}: {b}")?,
            }
        }
        Ok(())
    }
}

/// Options for `Enforcer::start`.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// The daemon's own pid (never enforced on).
    pub self_tgid: u32,
    /// cgroup2 mount, for the canary's throwaway cgroup and the sock_addr fallback's attachment.
    pub cgroup_mount: std::path::PathBuf,
    /// bpffs directory for pinned links and maps (`paths::BPF_PIN_DIR`; tests use their own).
    pub pin_dir: PathBuf,
    /// Repeats of one verdict within this window are counted in the next report rather than
    /// reported each (zero: report every one).
    pub verdict_window: Duration,
}

impl StartOptions {
    pub fn new(self_tgid: u32, cgroup_mount: PathBuf) -> StartOptions {
        StartOptions {
            self_tgid,
            cgroup_mount,
            pin_dir: PathBuf::from(crate::paths::BPF_PIN_DIR),
            verdict_window: Duration::from_secs(1),
        }
    }
}

/// A policy in force, as `Enforcer::policies` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnforcedPolicy {
    pub policy_id: u32,
    /// The name given to the last `apply`; "policy N" for one adopted from an earlier daemon.
    pub workload: String,
    pub rev: u32,
    pub modes: Modes,
    /// The cgroups given to `apply` / `add_cgroup`.
    pub cgroups: BTreeSet<u64>,
    /// Cgroups the workload created inside those, which the kernel put under the same policy.
    pub inherited: BTreeSet<u64>,
}

struct PolicyState {
    workload: String,
    rev: u32,
    modes: Modes,
    cgroups: BTreeSet<u64>,
    entries: RevEntries,
}

/// The loaded (or adopted, after a restart) enforcement programs and their pinned maps.
pub struct Enforcer {
    /// Holds the programs of this generation (their pinned links keep them attached regardless).
    _ebpf: Option<Ebpf>,
    maps: KernelMaps,
    verdicts: Option<RingBuf<MapData>>,
    status: Status,
    keys: HashKeys,
    layout: PinLayout,
    /// Links of this generation's bookkeeping programs, pinned.
    pinned: Vec<PinnedLink>,
    /// This daemon's link generation (links/<generation>/ under the pin directory).
    generation: u32,
    /// The programs that decide per workload: attached (and pinned in this generation) only while
    /// some workload has a policy, see `arm`.
    gated: Vec<attach::Gated>,
    /// Their links while attached.
    armed: Option<Vec<PinnedLink>>,
    /// cgroup2 mount (where the sock_addr fallback attaches).
    cgroup_mount: PathBuf,
    /// Exclusive use of the pinned state while this enforcer lives.
    _lock: pin::EnforcerLock,
    policies: BTreeMap<u32, PolicyState>,
    usage: Usage,
    /// Entries whose deletion failed, retried on the next update.
    leftovers: Vec<(u32, u32, RevEntries)>,
}

/// Unpins links of this daemon; each detaches as its last reference goes.
fn unpin_all(links: Vec<PinnedLink>) {
    for link in links {
        if let Err(err) = link.unpin() {
            tracing::warn!(%err, "cannot unpin an enforcement link");
        }
    }
}

fn modes_from_kernel(k: [u8; 4]) -> Modes {
    let mut m = Modes::default();
    for d in Domain::ALL {
        let mode = match k[d.index()] {
            2 => Mode::Enforce,
            1 => Mode::Audit,
            _ => Mode::Observe,
        };
        m.set(d, mode);
    }
    m
}

impl Enforcer {
    /// Loads the enforcement object, or adopts the one pinned under /sys/fs/bpf/stance by an earlier
    /// daemon; runs the canary self-test; falls back to cgroup sock_addr programs for the network
    /// domain where BPF-LSM does not deny. Never fails just because BPF-LSM is missing: the status
    /// says so per domain.
    pub fn start(opts: &StartOptions) -> Result<(Enforcer, Status), EnforceError> {
        if ENFORCE_OBJ.is_empty() {
            return Err(EnforceError::Unavailable(
                "this binary was built with STANCE_SKIP_BPF=1 and carries no BPF programs".into(),
            ));
        }
        let layout = PinLayout::new(&opts.pin_dir);
        layout.create(&opts.pin_dir)?;
        let lock = layout.lock()?;
        layout.check_pinned_maps()?;
        let meta = layout.read_meta();
        let keys = match &meta {
            Some(m) => HashKeys(m.hash_key),
            None => HashKeys::random().map_err(|e| EnforceError::Unavailable(format!("getrandom: {e}")))?,
        };
        let generation = meta.as_ref().map_or(0, |m| m.last_generation) + 1;
        let last_rev = meta.as_ref().map_or(0, |m| m.last_rev);

        let btf = Btf::from_sys_fs().map_err(|e| EnforceError::Unavailable(format!("no kernel BTF: {e}")))?;
        let window_ns = opts.verdict_window.as_nanos().min(u128::from(u64::MAX)) as u64;
        let mut loader = EbpfLoader::new();
        loader
            .btf(Some(&btf))
            .override_global("stance_tgid", &opts.self_tgid, true)
            .override_global("hash_key", &keys.0, true)
            .override_global("verdict_window_ns", &window_ns, true);
        let pin_paths: Vec<(&str, PathBuf)> = maps::PINNED.iter().map(|n| (*n, layout.map(n))).collect();
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(ENFORCE_OBJ).map_err(EnforceError::Load)?;
        let mut kmaps = KernelMaps::take(&mut ebpf)?;
        let meta = abi::stance_enforce_meta {
            magic: abi::STANCE_META_MAGIC,
            hash_key: keys.0,
            last_rev,
            last_generation: generation,
        };
        kmaps.meta.set(0, meta, 0).map_err(|source| EnforceError::Map { name: "enforce_meta", source })?;
        let ring = ebpf.take_map("verdicts").ok_or(EnforceError::MissingMap("verdicts"))?;
        let verdicts =
            RingBuf::try_from(ring).map_err(|source| EnforceError::Map { name: "verdicts", source })?;

        let unknown = || Backend::Unavailable("not tried".into());
        let status = Status {
            process: unknown(),
            file: unknown(),
            network: unknown(),
            capabilities: unknown(),
            adopted: 0,
            notes: Vec::new(),
        };
        let mut enf = Enforcer {
            _ebpf: None,
            maps: kmaps,
            verdicts: Some(verdicts),
            status,
            keys,
            layout,
            pinned: Vec::new(),
            generation,
            gated: Vec::new(),
            armed: None,
            cgroup_mount: opts.cgroup_mount.clone(),
            _lock: lock,
            policies: BTreeMap::new(),
            usage: Usage::default(),
            leftovers: Vec::new(),
        };
        enf.adopt()?;
        enf.status.adopted = enf.policies.len();
        for other in pin::other_layouts(&opts.pin_dir, &enf.layout) {
            enf.status.notes.push(format!(
                "enforcement pinned by another Stance version at {} stays in force until that directory is removed",
                other.display()
            ));
        }
        canary::remove_stale(&opts.cgroup_mount);

        let attached = enf.attach_programs(&mut ebpf, &btf, opts);
        let failed_programs = attached.failed;
        for (name, link) in attached.always {
            match enf.layout.pin_link(generation, name, link) {
                Ok(p) => enf.pinned.push(p),
                Err(e) => {
                    // The FdLink was consumed by the failed pin; the program detached with it.
                    enf.status.notes.push(format!("{name}: {e}; it is not attached"));
                }
            }
        }
        enf.gated = attached.gated.iter().map(|(g, _)| *g).collect();
        if enf.policies.is_empty() {
            // Nothing to decide for: the links the canary proved are dropped (detached) until the
            // first policy arrives.
            drop(attached.gated);
            if !enf.gated.is_empty() {
                enf.status.notes.push(
                    "the deciding programs wait, loaded but not attached, until a workload enters audit or enforce".into(),
                );
            }
        } else {
            // Adopted policies are enforced by this generation's programs from here on.
            let mut armed = Vec::new();
            for (g, link) in attached.gated {
                match enf.layout.pin_link(generation, g.name(), link) {
                    Ok(p) => armed.push(p),
                    Err(e) => enf.status.notes.push(format!("{}: {e}; it is not attached", g.name())),
                }
            }
            enf.armed = Some(armed);
        }
        for old in enf.layout.generations() {
            if old != generation {
                let kept = enf.layout.retire(old, &failed_programs);
                for k in kept {
                    enf.status.notes.push(format!(
                        "{k} of an earlier daemon (generation {old}) stays attached: this daemon could not load its own"
                    ));
                }
            }
        }
        enf._ebpf = Some(ebpf);
        let status = enf.status.clone();
        Ok((enf, status))
    }

    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Installs `policy` with `modes` for the workload `policy_id` (a stable number per workload,
    /// chosen by the caller) on all of its `cgroups`, atomically; returns the new revision. A policy
    /// that does not fit, or a failed update, leaves the previous revision in force. Modes that are
    /// all observe mean `release`.
    pub fn apply(
        &mut self,
        workload: &str,
        policy_id: u32,
        cgroups: &[u64],
        policy: &Policy,
        modes: Modes,
    ) -> Result<u32, EnforceError> {
        if modes.is_observe_only() {
            self.release(policy_id)?;
            return Ok(0);
        }
        let compiled = rules::compile(policy, &self.keys)
            .map_err(|source| EnforceError::Invalid { workload: workload.to_owned(), source })?;
        self.retry_leftovers();
        let target: BTreeSet<u64> = cgroups.iter().copied().collect();
        let in_map = self
            .maps
            .cgroup_entries()
            .map_err(|source| EnforceError::Update { workload: workload.to_owned(), source })?;
        self.usage.cgroups = in_map.len();
        let known: BTreeSet<u64> = in_map.iter().map(|(cg, _)| *cg).collect();
        let need = Usage {
            file: compiled.files.len(),
            exec: compiled.exec_entries(),
            net: compiled.net.len(),
            unix: compiled.unix.len(),
            info: 1,
            cgroups: target.difference(&known).count(),
        };
        if let Some((what, needed, free)) = self.usage.first_overflow(&need) {
            return Err(EnforceError::TooLarge { workload: workload.to_owned(), what, needed, free });
        }
        let update_err = |source| EnforceError::Update { workload: workload.to_owned(), source };
        let rev = self.next_rev().map_err(update_err)?;
        // The programs must be attached before any cgroup points at the policy. From here on, a
        // failure with no policy in force detaches them again.
        self.arm()?;
        let kmodes = modes.kernel();
        let mut entries = RevEntries::default();
        if let Err(source) = self.maps.write_revision(policy_id, rev, &compiled, kmodes, &mut entries) {
            self.usage.add(&entries);
            self.delete_rev(policy_id, rev, entries);
            self.disarm_if_idle();
            return Err(update_err(source));
        }
        self.usage.add(&entries);

        // The swap: one map update per cgroup, each atomic for the programs reading it.
        let value = abi::stance_cgroup_policy { policy_id, rev, mode: kmodes, flags: 0 };
        let mut swapped: Vec<(u64, Option<abi::stance_cgroup_policy>)> = Vec::new();
        for &cg in &target {
            let prev = self.maps.cgroup_policy.get(&cg, 0).ok();
            if let Err(source) = self.maps.cgroup_policy.insert(cg, value, 0) {
                for (cg, prev) in swapped.iter().rev() {
                    let _ = match prev {
                        Some(v) => self.maps.cgroup_policy.insert(*cg, *v, 0),
                        None => self.maps.cgroup_policy.remove(cg),
                    };
                }
                let _ = self.maps.grace_period();
                self.delete_rev(policy_id, rev, entries);
                self.disarm_if_idle();
                return Err(update_err(source));
            }
            swapped.push((cg, prev));
        }
        let old = self.policies.remove(&policy_id);
        if let Some(old) = &old {
            for cg in old.cgroups.difference(&target) {
                let _ = self.maps.cgroup_policy.remove(cg);
            }
        }
        for other in self.policies.values_mut() {
            other.cgroups.retain(|cg| !target.contains(cg));
        }
        self.policies.insert(
            policy_id,
            PolicyState { workload: workload.to_owned(), rev, modes, cgroups: target, entries },
        );

        if let Some(old) = old {
            // Cgroups the workload made inside its own copied the old entry; once no mkdir can
            // still be copying it (a grace period), move them to the new revision too. Then no
            // program may still be deciding with the old revision when it goes.
            let moved =
                self.maps.grace_period().and_then(|()| self.repoint_inherited(policy_id, rev, kmodes));
            match moved.and_then(|()| self.maps.grace_period()) {
                Ok(()) => self.delete_rev(policy_id, old.rev, old.entries),
                Err(_) => self.leftovers.push((policy_id, old.rev, old.entries)),
            }
        }
        self.recount_cgroups();
        Ok(rev)
    }

    /// A new cgroup of a workload already in audit/enforce (container restart, new launch).
    pub fn add_cgroup(&mut self, policy_id: u32, cgroup: u64) -> Result<(), EnforceError> {
        let st = self.policies.get(&policy_id).ok_or(EnforceError::UnknownPolicy(policy_id))?;
        if st.cgroups.contains(&cgroup) {
            return Ok(());
        }
        let workload = st.workload.clone();
        let known = self.policies.values().any(|p| p.cgroups.contains(&cgroup));
        if !known {
            let need = Usage { cgroups: 1, ..Default::default() };
            if let Some((what, needed, free)) = self.usage.first_overflow(&need) {
                return Err(EnforceError::TooLarge { workload, what, needed, free });
            }
        }
        let value = abi::stance_cgroup_policy { policy_id, rev: st.rev, mode: st.modes.kernel(), flags: 0 };
        self.maps
            .cgroup_policy
            .insert(cgroup, value, 0)
            .map_err(|source| EnforceError::Update { workload, source })?;
        for other in self.policies.values_mut() {
            other.cgroups.remove(&cgroup);
        }
        if let Some(st) = self.policies.get_mut(&policy_id) {
            st.cgroups.insert(cgroup);
        }
        self.recount_cgroups();
        Ok(())
    }

    /// A cgroup that is gone (rmdir) or left the workload: its entry is removed.
    pub fn remove_cgroup(&mut self, cgroup: u64) -> Result<(), EnforceError> {
        let owner = self
            .policies
            .iter()
            .find(|(_, p)| p.cgroups.contains(&cgroup))
            .map(|(id, p)| (*id, p.workload.clone()));
        let Some((id, workload)) = owner else { return Ok(()) };
        match self.maps.cgroup_policy.remove(&cgroup) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(source) => return Err(EnforceError::Update { workload, source }),
        }
        if let Some(p) = self.policies.get_mut(&id) {
            p.cgroups.remove(&cgroup);
        }
        self.recount_cgroups();
        Ok(())
    }

    /// Stops evaluating the workload: its cgroups' entries and rules are removed.
    pub fn release(&mut self, policy_id: u32) -> Result<(), EnforceError> {
        let Some(st) = self.policies.remove(&policy_id) else { return Ok(()) };
        for cg in &st.cgroups {
            let ours = self.maps.cgroup_policy.get(cg, 0).is_ok_and(|v| v.policy_id == policy_id);
            if !ours {
                continue;
            }
            match self.maps.cgroup_policy.remove(cg) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(source) => {
                    let workload = st.workload.clone();
                    self.policies.insert(policy_id, st);
                    return Err(EnforceError::Update { workload, source });
                }
            }
        }
        // Cgroups the workload made inside its own go too (after a grace period, none can still
        // be copying an entry of this policy).
        let _ = self.maps.grace_period();
        for (cg, v) in self.maps.cgroup_entries().unwrap_or_default() {
            if v.policy_id == policy_id {
                let _ = self.maps.cgroup_policy.remove(&cg);
            }
        }
        self.recount_cgroups();
        match self.maps.grace_period() {
            Ok(()) => self.delete_rev(policy_id, st.rev, st.entries),
            Err(_) => self.leftovers.push((policy_id, st.rev, st.entries)),
        }
        self.disarm_if_idle();
        Ok(())
    }

    /// Whether the deciding programs are attached now (some workload has a policy).
    pub fn armed(&self) -> bool {
        self.armed.is_some()
    }

    /// The deny / would-deny ring buffer (records: stance_verdict_event + object + exe; decode
    /// with `verdict::decode`). Once.
    pub fn take_verdicts(&mut self) -> Option<RingBuf<MapData>> {
        self.verdicts.take()
    }

    /// Every policy in force (after a restart: what was adopted from the pins).
    pub fn policies(&self) -> Vec<EnforcedPolicy> {
        let entries = self.maps.cgroup_entries().unwrap_or_default();
        self.policies
            .iter()
            .map(|(id, p)| EnforcedPolicy {
                policy_id: *id,
                workload: p.workload.clone(),
                rev: p.rev,
                modes: p.modes,
                cgroups: p.cgroups.clone(),
                inherited: entries
                    .iter()
                    .filter(|(cg, v)| v.policy_id == *id && !p.cgroups.contains(cg))
                    .map(|(cg, _)| *cg)
                    .collect(),
            })
            .collect()
    }

    /// Verdicts the kernel could not report since these programs were loaded: (ring buffer full,
    /// record could not be built). The decisions were made all the same.
    pub fn verdict_losses(&self) -> (u64, u64) {
        self.maps.verdict_losses()
    }

    /// Whether some workload has a policy here (in audit or enforce), its own or adopted from pins.
    pub fn in_force(&self) -> bool {
        !self.policies.is_empty()
    }

    /// Ends enforcement entirely: unpins every link (detaching the programs) and every map. For
    /// uninstalling, for tests, and for a daemon that stops with nothing in force; one that stops
    /// while a workload is in audit or enforce keeps its pins (see README). The pin directory goes
    /// too once nothing else is in it.
    pub fn remove_all(self) -> Result<(), EnforceError> {
        let layout = self.layout.clone();
        drop(self);
        layout.remove_all()?;
        // Only when empty (another layout's pins stay); an error just means it is not.
        if let Some(dir) = layout.root.parent() {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }

    // ---- internals ---------------------------------------------------------------------------

    /// Attaches the deciding programs (and pins them in this generation) if they are not. All or
    /// none: a domain the status reports as enforced never runs with part of its hooks.
    fn arm(&mut self) -> Result<(), EnforceError> {
        if self.armed.is_some() || self.gated.is_empty() {
            return Ok(());
        }
        let Some(ebpf) = self._ebpf.as_mut() else {
            // During start: the canary runs with the links attach_programs holds.
            return Ok(());
        };
        let mut armed = Vec::with_capacity(self.gated.len());
        for &g in &self.gated {
            let pinned = g
                .attach(ebpf, &self.cgroup_mount)
                .map_err(|reason| EnforceError::Attach { program: g.name(), reason })
                .and_then(|link| self.layout.pin_link(self.generation, g.name(), link));
            match pinned {
                Ok(p) => armed.push(p),
                Err(e) => {
                    unpin_all(armed);
                    return Err(e);
                }
            }
        }
        tracing::info!(programs = armed.len(), "enforcement programs attached");
        self.armed = Some(armed);
        Ok(())
    }

    /// Detaches the deciding programs once no workload has a policy (after the last `release`, or
    /// an `apply` that failed before anything was in force).
    fn disarm_if_idle(&mut self) {
        if !self.policies.is_empty() {
            return;
        }
        if let Some(armed) = self.armed.take() {
            unpin_all(armed);
            tracing::info!("no workload in audit or enforce: enforcement programs detached");
        }
    }
    fn next_rev(&mut self) -> Result<u32, aya::maps::MapError> {
        let mut meta = self.maps.meta.get(&0, 0)?;
        meta.last_rev = meta.last_rev.wrapping_add(1).max(1);
        self.maps.meta.set(0, meta, 0)?;
        Ok(meta.last_rev)
    }

    fn recount_cgroups(&mut self) {
        self.usage.cgroups = match self.maps.cgroup_entries() {
            Ok(all) => all.len(),
            Err(_) => self.policies.values().map(|p| p.cgroups.len()).sum(),
        };
    }

    /// Points the kernel-made (inherited) entries of a policy at revision `rev`. An entry whose
    /// cgroup was removed meanwhile is not brought back (update only if it exists).
    fn repoint_inherited(
        &mut self,
        policy_id: u32,
        rev: u32,
        mode: [u8; 4],
    ) -> Result<(), aya::maps::MapError> {
        const BPF_EXIST: u64 = 2;
        for (cg, v) in self.maps.cgroup_entries()? {
            if v.policy_id == policy_id && v.flags & abi::STANCE_CG_INHERITED != 0 && v.rev != rev {
                let value = abi::stance_cgroup_policy { policy_id, rev, mode, flags: v.flags };
                match self.maps.cgroup_policy.insert(cg, value, BPF_EXIST) {
                    Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                    Err(aya::maps::MapError::SyscallError(e))
                        if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Deletes a revision's entries (after a grace period, where it was ever live); what fails to
    /// go is kept for a retry and still counted.
    fn delete_rev(&mut self, policy_id: u32, rev: u32, entries: RevEntries) {
        let left = self.maps.delete_revision(policy_id, rev, &entries);
        self.usage.sub(&entries);
        if !left.is_empty() {
            self.usage.add(&left);
            tracing::warn!(
                policy_id,
                rev,
                "some entries of an old revision could not be deleted; will retry"
            );
            self.leftovers.push((policy_id, rev, left));
        }
    }

    fn retry_leftovers(&mut self) {
        if self.leftovers.is_empty() || self.maps.grace_period().is_err() {
            return;
        }
        for (id, rev, entries) in std::mem::take(&mut self.leftovers) {
            self.delete_rev(id, rev, entries);
        }
    }

    /// Rebuilds the in-memory view from pinned maps: keeps each policy's live revision (and points
    /// every one of its cgroups at it), deletes incomplete and superseded revisions and whatever the
    /// canary of a dead daemon left.
    fn adopt(&mut self) -> Result<(), EnforceError> {
        let scanned = self.maps.scan()?;
        for e in scanned.revs.values() {
            self.usage.add(e);
        }
        let ids: BTreeSet<u32> =
            scanned.revs.keys().map(|k| k.0).chain(scanned.cgroups.values().map(|v| v.policy_id)).collect();
        let mut garbage: Vec<(u32, u32)> = Vec::new();
        let mut max_rev = 0;
        for id in ids {
            let (live, rest) = if id == CANARY_POLICY_ID {
                (None, scanned.revs.keys().filter(|k| k.0 == id).map(|k| k.1).collect())
            } else {
                maps::live_revision(id, &scanned)
            };
            garbage.extend(rest.iter().map(|r| (id, *r)));
            max_rev = max_rev.max(rest.iter().copied().max().unwrap_or(0));
            let cgroups: Vec<(u64, abi::stance_cgroup_policy)> =
                scanned.cgroups.iter().filter(|(_, v)| v.policy_id == id).map(|(c, v)| (*c, *v)).collect();
            let Some(rev) = live else {
                for (cg, _) in cgroups {
                    let _ = self.maps.cgroup_policy.remove(&cg);
                }
                continue;
            };
            max_rev = max_rev.max(rev);
            let info = scanned.infos.get(&(id, rev)).copied().unwrap_or_default();
            for (cg, v) in &cgroups {
                if v.rev != rev {
                    let value =
                        abi::stance_cgroup_policy { policy_id: id, rev, mode: info.mode, flags: v.flags };
                    self.maps
                        .cgroup_policy
                        .insert(*cg, value, 0)
                        .map_err(|source| EnforceError::Map { name: "cgroup_policy", source })?;
                }
            }
            self.policies.insert(
                id,
                PolicyState {
                    workload: format!("policy {id}"),
                    rev,
                    modes: modes_from_kernel(info.mode),
                    cgroups: cgroups
                        .iter()
                        .filter(|(_, v)| v.flags & abi::STANCE_CG_INHERITED == 0)
                        .map(|(c, _)| *c)
                        .collect(),
                    entries: scanned.revs.get(&(id, rev)).cloned().unwrap_or_default(),
                },
            );
        }
        self.recount_cgroups();
        let mut meta =
            self.maps.meta.get(&0, 0).map_err(|source| EnforceError::Map { name: "enforce_meta", source })?;
        if max_rev > meta.last_rev {
            meta.last_rev = max_rev;
            self.maps
                .meta
                .set(0, meta, 0)
                .map_err(|source| EnforceError::Map { name: "enforce_meta", source })?;
        }
        if !garbage.is_empty() {
            self.maps.grace_period().map_err(|source| EnforceError::Map { name: "rcu_barrier", source })?;
            for (id, rev) in garbage {
                let entries = scanned.revs.get(&(id, rev)).cloned().unwrap_or_default();
                self.delete_rev(id, rev, entries);
            }
        }
        Ok(())
    }
}
