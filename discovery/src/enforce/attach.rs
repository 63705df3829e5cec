//! Loading and attaching the enforcement programs at start: the cgroup bookkeeping programs, the
//! BPF-LSM hooks (kept only if the canary proves they deny, and only for domains whose every
//! program attached), and the cgroup sock_addr fallback for the network domain where BPF-LSM is not.
//!
//! The programs that decide (the LSM hooks and the sock_addr fallback) run on every open, exec,
//! capability check and connect of the whole host, for whichever task makes it. While no workload
//! has a policy they can only find none and allow, so they are attached only while one has
//! (`Enforcer::arm` / `disarm_if_idle`): a host that only observes does not pay for them.

use std::collections::{BTreeMap, BTreeSet};

use aya::{
    programs::{
        links::{CgroupAttachMode, FdLink},
        BtfTracePoint, CgroupSockAddr, Lsm, ProgramError,
    },
    Btf, Ebpf,
};

use super::{canary, Backend, Domain, Enforcer, Mode, Modes, Policy, StartOptions, CANARY_POLICY_ID};

/// LSM programs: (program, hook, domain).
const LSM_PROGRAMS: &[(&str, &str, Domain)] = &[
    ("stance_file_open", "file_open", Domain::File),
    ("stance_path_mknod", "path_mknod", Domain::File),
    ("stance_path_unlink", "path_unlink", Domain::File),
    ("stance_path_link", "path_link", Domain::File),
    ("stance_path_rename", "path_rename", Domain::File),
    ("stance_path_truncate", "path_truncate", Domain::File),
    ("stance_bprm_check", "bprm_check_security", Domain::Process),
    ("stance_ptrace_access_check", "ptrace_access_check", Domain::Process),
    ("stance_capable", "capable", Domain::Capabilities),
    ("stance_socket_connect", "socket_connect", Domain::Network),
    ("stance_socket_sendmsg", "socket_sendmsg", Domain::Network),
    ("stance_unix_stream_connect", "unix_stream_connect", Domain::Network),
    ("stance_unix_may_send", "unix_may_send", Domain::Network),
];

/// Kernel-side bookkeeping of cgroups created inside enforced ones: (program, BTF tracepoint).
const CGROUP_PROGRAMS: &[(&str, &str)] =
    &[("stance_cgroup_inherit", "cgroup_mkdir"), ("stance_cgroup_forget", "cgroup_rmdir")];

/// The network fallback, attached to the cgroup2 root where BPF-LSM does not deny.
const SOCK_ADDR_PROGRAMS: &[&str] =
    &["stance_connect4", "stance_connect6", "stance_sendmsg4", "stance_sendmsg6"];

fn program_error(err: &ProgramError) -> String {
    crate::probes::first_line(err)
}

/// A program that decides per workload, attached only while some workload has a policy.
#[derive(Debug, Clone, Copy)]
pub(super) enum Gated {
    /// A BPF-LSM program (already loaded for its hook).
    Lsm(&'static str),
    /// A cgroup sock_addr program, attached at the cgroup2 root.
    SockAddr(&'static str),
}

impl Gated {
    pub(super) fn name(self) -> &'static str {
        match self {
            Gated::Lsm(n) | Gated::SockAddr(n) => n,
        }
    }

    /// Attaches the loaded program again (after `disarm_if_idle` detached it).
    pub(super) fn attach(self, ebpf: &mut Ebpf, cgroup_mount: &std::path::Path) -> Result<FdLink, String> {
        match self {
            Gated::Lsm(name) => attach_lsm(ebpf, name),
            Gated::SockAddr(name) => {
                let root = std::fs::File::open(cgroup_mount)
                    .map_err(|e| format!("cannot open the cgroup2 root {}: {e}", cgroup_mount.display()))?;
                attach_sock_addr(ebpf, name, &root)
            }
        }
    }
}

fn load_lsm(ebpf: &mut Ebpf, btf: &Btf, name: &str, hook: &str) -> Result<FdLink, String> {
    let prog = ebpf.program_mut(name).ok_or_else(|| format!("program {name} missing from the object"))?;
    let p: &mut Lsm = prog.try_into().map_err(|e| program_error(&e))?;
    p.load(hook, btf).map_err(|e| program_error(&e))?;
    attach_lsm(ebpf, name)
}

fn attach_lsm(ebpf: &mut Ebpf, name: &str) -> Result<FdLink, String> {
    let prog = ebpf.program_mut(name).ok_or_else(|| format!("program {name} missing from the object"))?;
    let p: &mut Lsm = prog.try_into().map_err(|e| program_error(&e))?;
    let id = p.attach().map_err(|e| program_error(&e))?;
    let link = p.take_link(id).map_err(|e| program_error(&e))?;
    Ok(link.into())
}

fn load_btf_tracepoint(ebpf: &mut Ebpf, btf: &Btf, name: &str, tp: &str) -> Result<FdLink, String> {
    let prog = ebpf.program_mut(name).ok_or_else(|| format!("program {name} missing from the object"))?;
    let p: &mut BtfTracePoint = prog.try_into().map_err(|e| program_error(&e))?;
    p.load(tp, btf).map_err(|e| program_error(&e))?;
    let id = p.attach().map_err(|e| program_error(&e))?;
    let link = p.take_link(id).map_err(|e| program_error(&e))?;
    Ok(link.into())
}

fn load_sock_addr(ebpf: &mut Ebpf, name: &str, cgroup: &std::fs::File) -> Result<FdLink, String> {
    let prog = ebpf.program_mut(name).ok_or_else(|| format!("program {name} missing from the object"))?;
    let p: &mut CgroupSockAddr = prog.try_into().map_err(|e| program_error(&e))?;
    p.load().map_err(|e| program_error(&e))?;
    attach_sock_addr(ebpf, name, cgroup)
}

fn attach_sock_addr(ebpf: &mut Ebpf, name: &str, cgroup: &std::fs::File) -> Result<FdLink, String> {
    let prog = ebpf.program_mut(name).ok_or_else(|| format!("program {name} missing from the object"))?;
    let p: &mut CgroupSockAddr = prog.try_into().map_err(|e| program_error(&e))?;
    // Kernels >= 5.7 attach through a bpf_link, which always runs alongside other programs
    // (BPF_LINK_CREATE takes no flags: Single means "no flags" there).
    let id = p.attach(cgroup, CgroupAttachMode::Single).map_err(|e| program_error(&e))?;
    let link = p.take_link(id).map_err(|e| program_error(&e))?;
    FdLink::try_from(link).map_err(|e| format!("{name}: not an fd link: {e}"))
}

/// What `attach_programs` attached.
pub(super) struct Attached {
    /// Bookkeeping programs, attached for as long as the pinned state exists.
    pub always: Vec<(&'static str, FdLink)>,
    /// Programs that decide per workload (see the module comment), attached now.
    pub gated: Vec<(Gated, FdLink)>,
    /// Programs that failed to load, whose links of an earlier daemon are kept.
    pub failed: BTreeSet<String>,
}

impl Enforcer {
    /// Attaches every program this kernel takes and sets the status per domain.
    pub(super) fn attach_programs(&mut self, ebpf: &mut Ebpf, btf: &Btf, opts: &StartOptions) -> Attached {
        let mut links: Vec<(&'static str, FdLink)> = Vec::new();
        let mut gated: Vec<(Gated, FdLink)> = Vec::new();
        let mut failed: BTreeMap<Domain, String> = BTreeMap::new();
        let mut failed_programs: BTreeSet<String> = BTreeSet::new();
        // Cgroups created inside an enforced workload stay in it (every backend reads the map).
        for &(name, tp) in CGROUP_PROGRAMS {
            match load_btf_tracepoint(ebpf, btf, name, tp) {
                Ok(link) => links.push((name, link)),
                Err(e) => {
                    failed_programs.insert(name.to_owned());
                    self.status.notes.push(format!(
                        "{name} cannot be loaded ({e}): cgroups a workload creates inside its own are not \
                             enforced until the daemon adds them"
                    ));
                }
            }
        }

        // BPF-LSM: every program of a domain must attach for the domain to count.
        let mut lsm_links: Vec<(&'static str, Domain, FdLink)> = Vec::new();
        for &(name, hook, domain) in LSM_PROGRAMS {
            match load_lsm(ebpf, btf, name, hook) {
                Ok(link) => lsm_links.push((name, domain, link)),
                Err(e) => {
                    failed_programs.insert(name.to_owned());
                    failed.entry(domain).or_insert(format!("BPF-LSM program {name} cannot be loaded: {e}"));
                }
            }
        }
        let lsm_proof: Result<(), String> = match failed.get(&Domain::File) {
            Some(reason) => Err(reason.clone()),
            None => self.lsm_canary(opts),
        };
        match &lsm_proof {
            Ok(()) => {
                // A domain counts only with all of its programs: the others' links are dropped
                // (detached), so what enforces is exactly what the status says.
                gated.extend(
                    lsm_links
                        .into_iter()
                        .filter(|(_, d, _)| !failed.contains_key(d))
                        .map(|(n, _, l)| (Gated::Lsm(n), l)),
                );
                for d in Domain::ALL {
                    let b = match failed.get(&d) {
                        Some(r) => Backend::Unavailable(r.clone()),
                        None => Backend::BpfLsm,
                    };
                    self.status.set(d, b);
                }
            }
            Err(reason) => {
                // Attached but not denying (or not loadable): detach, and say why per domain.
                drop(lsm_links);
                for d in Domain::ALL {
                    let r = failed.get(&d).unwrap_or(reason);
                    self.status.set(d, Backend::Unavailable(r.clone()));
                }
            }
        }

        if self.status.network != Backend::BpfLsm {
            let lsm_reason = match &self.status.network {
                Backend::Unavailable(r) => r.clone(),
                _ => String::new(),
            };
            match self.sock_addr_fallback(ebpf, opts) {
                Ok(fallback) => {
                    gated.extend(fallback.into_iter().map(|(n, l)| (Gated::SockAddr(n), l)));
                    self.status.network = Backend::CgroupSockAddr;
                    self.status.notes.push(format!("network: BPF-LSM not used ({lsm_reason})"));
                }
                Err(e) => {
                    self.status.network =
                        Backend::Unavailable(format!("{lsm_reason}; cgroup sock_addr fallback: {e}"));
                }
            }
        }
        Attached { always: links, gated, failed: failed_programs }
    }

    /// Loads and attaches the cgroup sock_addr programs at the cgroup2 root, and proves they deny.
    fn sock_addr_fallback(
        &mut self,
        ebpf: &mut Ebpf,
        opts: &StartOptions,
    ) -> Result<Vec<(&'static str, FdLink)>, String> {
        let root = std::fs::File::open(&opts.cgroup_mount)
            .map_err(|e| format!("cannot open the cgroup2 root {}: {e}", opts.cgroup_mount.display()))?;
        let mut links = Vec::new();
        for &name in SOCK_ADDR_PROGRAMS {
            links.push((name, load_sock_addr(ebpf, name, &root).map_err(|e| format!("{name}: {e}"))?));
        }
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("canary listener: {e}"))?;
        let addr = match listener.local_addr() {
            Ok(std::net::SocketAddr::V4(a)) => a,
            other => return Err(format!("canary listener address: {other:?}")),
        };
        let cg = canary::CanaryCgroup::create(&opts.cgroup_mount, "net")
            .map_err(|e| format!("canary cgroup under {}: {e}", opts.cgroup_mount.display()))?;
        let modes = Modes { network: Mode::Enforce, ..Default::default() };
        self.apply("stance canary", CANARY_POLICY_ID, &[cg.id], &Policy::default(), modes)
            .map_err(|e| format!("canary policy: {e}"))?;
        let outcome = cg.connect_probe(addr);
        let _ = self.release(CANARY_POLICY_ID);
        match outcome {
            canary::Outcome::Denied => Ok(links),
            canary::Outcome::NotDenied => Err("the canary connect was not denied".into()),
            canary::Outcome::Failed(why) => Err(format!("canary could not run: {why}")),
        }
    }
}
