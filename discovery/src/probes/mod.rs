//! Kernel side → userspace: loads Stance's observation programs (`probes-ebpf/src/observe.bpf.c`,
//! embedded at build time), attaches each probe family through the first of its hooks the kernel
//! takes (opens and network calls: fexit, else syscall tracepoints; never both), reports per family
//! `active` (with the hook, where there was a choice) or `unavailable: <reason>`, and hands out the
//! ring buffer, the loss counters and the dedup maps (read at a clean stop, `dedup`).
//!
//! Nothing here interprets events beyond decoding (`decode`); aggregation is the pipeline's job.

pub mod abi;
pub mod decode;
pub mod dedup;

use std::fmt;

use aya::{
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{BtfTracePoint, FExit, Lsm, ProgramError, TracePoint},
    Btf, Ebpf, EbpfError, EbpfLoader,
};

/// The observation object, compiled by build.rs from probes-ebpf/src/observe.bpf.c.
static OBSERVE_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/observe.bpf.o"));

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("this binary was built with STANCE_SKIP_BPF=1 and carries no BPF programs: build it with `make build`")]
    NotBuilt,
    #[error("BPF is unavailable: cannot read kernel BTF from /sys/kernel/btf/vmlinux")]
    NoBtf(#[source] aya::BtfError),
    #[error("cannot load the BPF object")]
    Load(#[source] EbpfError),
    #[error("BPF object has no map {0}")]
    MissingMap(&'static str),
    #[error("BPF map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("cannot mount tracefs at {path}")]
    Tracefs {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("no probe family could be attached: BPF is unavailable on this kernel ({0})")]
    NothingAttached(String),
}

/// Settings the kernel side is loaded with.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub ringbuf_bytes: u32,
    /// Repeats of one key within this window are counted, not emitted (the kernel counts it in
    /// whole ticks); 0 turns the in-kernel dedup off.
    pub dedup_window_ns: u64,
    pub argv_max: u32,
    /// Bytes waiting in the ring buffer before the kernel wakes the reader (which otherwise drains
    /// on its own timer, `pipeline::DRAIN_EVERY`).
    pub wakeup_bytes: u64,
    /// The daemon's own pid: its activity is not observed.
    pub self_tgid: u32,
}

/// Outcome of attaching one probe family.
#[derive(Debug, Clone)]
pub struct FamilyStatus {
    pub family: &'static str,
    /// The hook the family observes through (`fexit`, `syscall tracepoints`, ...): the first of its
    /// alternatives that the kernel took; `None` when none did.
    pub hook: Option<&'static str>,
    /// Whether the family has more than one way to hook (only then is the hook worth printing).
    has_alternatives: bool,
    /// Programs of the family that attached.
    pub attached: Vec<&'static str>,
    /// Programs of the hook in use that failed, or of every hook when none was usable, with the
    /// reason (first line of the kernel's / aya's error).
    pub failed: Vec<(&'static str, String)>,
    /// Earlier alternatives the kernel refused, with why (the family then uses a later one).
    pub passed_over: Vec<(&'static str, String)>,
}

impl FamilyStatus {
    pub fn is_active(&self) -> bool {
        !self.attached.is_empty()
    }
}

impl fmt::Display for FamilyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reasons = || self.failed.iter().map(|(p, r)| format!("{p}: {r}")).collect::<Vec<_>>().join("; ");
        let hook = self.hook.filter(|_| self.has_alternatives);
        match (self.attached.is_empty(), self.failed.is_empty(), hook) {
            (true, _, _) => write!(f, "{}: unavailable: {}", self.family, reasons()),
            (false, true, None) => write!(f, "{}: active", self.family),
            (false, true, Some(h)) => write!(f, "{}: active ({h})", self.family),
            (false, false, None) => write!(f, "{}: active (not attached: {})", self.family, reasons()),
            (false, false, Some(h)) => {
                write!(f, "{}: active ({h}; not attached: {})", self.family, reasons())
            }
        }
    }
}

/// How one program attaches.
enum Attach {
    /// `tracepoint/<category>/<name>`
    TracePoint(&'static str, &'static str),
    /// `tp_btf/<name>`
    BtfTracePoint(&'static str),
    /// `fexit/<function>`
    FExit(&'static str),
    /// `lsm/<hook>`
    Lsm(&'static str),
}

impl Attach {
    /// The hook's name in the start-up report. It matters to a reader for opens and network calls:
    /// attaching any syscall tracepoint puts every syscall of every task on the kernel's slow path,
    /// while an fexit trampoline costs only the calls it is attached to.
    fn label(&self) -> &'static str {
        match self {
            Attach::TracePoint(..) => "syscall tracepoints",
            Attach::BtfTracePoint(_) => "tp_btf",
            Attach::FExit(_) => "fexit",
            Attach::Lsm(_) => "BPF-LSM",
        }
    }
}

/// One way of observing a family: a set of programs of one kind.
struct Hook {
    /// Its name in the start-up report when the programs' kind is not enough: hooks in a kernel
    /// function that every such call passes through name it (only those see io_uring's calls).
    label: Option<&'static str>,
    programs: &'static [(&'static str, Attach)],
    /// All programs must attach for the hook to be used; otherwise the ones that did are unloaded
    /// and the next hook is tried (so two hooks never both report, or both miss, one event).
    /// A last hook that is not strict is used when any of its programs attaches.
    strict: bool,
}

impl Hook {
    /// The hook's name in the start-up report: its label, or its first program's kind.
    fn label(&self) -> &'static str {
        match (self.label, self.programs.first()) {
            (Some(label), _) => label,
            (None, Some((_, how))) => how.label(),
            (None, None) => "none",
        }
    }
}

/// A probe family: the programs that observe one kind of behaviour, as alternative hooks in
/// order of preference (the first the kernel takes is used, and only that one).
struct Family {
    name: &'static str,
    hooks: &'static [Hook],
}

const FAMILIES: &[Family] = &[
    Family {
        name: "exec",
        hooks: &[Hook {
            label: None,
            programs: &[("stance_exec", Attach::BtfTracePoint("sched_process_exec"))],
            strict: false,
        }],
    },
    Family {
        name: "process lifecycle",
        hooks: &[Hook {
            label: None,
            programs: &[
                ("stance_fork", Attach::BtfTracePoint("sched_process_fork")),
                ("stance_exit", Attach::BtfTracePoint("sched_process_exit")),
            ],
            strict: false,
        }],
    },
    Family {
        name: "file opens",
        hooks: &[
            // The kernel's open path: every open syscall, 32-bit ones and io_uring's OPENAT, by
            // kernel objects; open_by_handle_at does not pass through it.
            Hook {
                label: Some("fexit, do_filp_open"),
                programs: &[
                    ("stance_fx_filp_open", Attach::FExit("do_filp_open")),
                    ("stance_fx_open_by_handle_at", Attach::FExit("__x64_sys_open_by_handle_at")),
                ],
                strict: true,
            },
            Hook {
                label: None,
                programs: &[
                    ("stance_fx_open", Attach::FExit("__x64_sys_open")),
                    ("stance_fx_openat", Attach::FExit("__x64_sys_openat")),
                    ("stance_fx_openat2", Attach::FExit("__x64_sys_openat2")),
                    ("stance_fx_creat", Attach::FExit("__x64_sys_creat")),
                    ("stance_fx_open_by_handle_at", Attach::FExit("__x64_sys_open_by_handle_at")),
                ],
                strict: true,
            },
            Hook {
                label: None,
                programs: &[
                    ("stance_exit_open", Attach::TracePoint("syscalls", "sys_exit_open")),
                    ("stance_exit_openat", Attach::TracePoint("syscalls", "sys_exit_openat")),
                    ("stance_exit_openat2", Attach::TracePoint("syscalls", "sys_exit_openat2")),
                    ("stance_exit_creat", Attach::TracePoint("syscalls", "sys_exit_creat")),
                    (
                        "stance_exit_open_by_handle_at",
                        Attach::TracePoint("syscalls", "sys_exit_open_by_handle_at"),
                    ),
                ],
                strict: false,
            },
        ],
    },
    // Unlink, rename, link, truncate by path and mknod: enforcement decides them as writes to each
    // name, so they are learned as such. Where fexit loads, in the kernel's security_path_* hooks
    // (the names resolved, io_uring's too, at the same place enforcement decides); else the
    // syscalls' exit tracepoints with the caller's strings.
    Family {
        name: "file name changes",
        hooks: &[
            Hook {
                label: Some("fexit, security_path_*"),
                programs: &[
                    ("stance_fx_path_unlink", Attach::FExit("security_path_unlink")),
                    ("stance_fx_path_rename", Attach::FExit("security_path_rename")),
                    ("stance_fx_path_link", Attach::FExit("security_path_link")),
                    ("stance_fx_path_truncate", Attach::FExit("security_path_truncate")),
                    ("stance_fx_path_mknod", Attach::FExit("security_path_mknod")),
                ],
                strict: true,
            },
            Hook {
                label: None,
                programs: &[
                    ("stance_exit_unlink", Attach::TracePoint("syscalls", "sys_exit_unlink")),
                    ("stance_exit_unlinkat", Attach::TracePoint("syscalls", "sys_exit_unlinkat")),
                    ("stance_exit_rename", Attach::TracePoint("syscalls", "sys_exit_rename")),
                    ("stance_exit_renameat", Attach::TracePoint("syscalls", "sys_exit_renameat")),
                    ("stance_exit_renameat2", Attach::TracePoint("syscalls", "sys_exit_renameat2")),
                    ("stance_exit_link", Attach::TracePoint("syscalls", "sys_exit_link")),
                    ("stance_exit_linkat", Attach::TracePoint("syscalls", "sys_exit_linkat")),
                    ("stance_exit_truncate", Attach::TracePoint("syscalls", "sys_exit_truncate")),
                    ("stance_exit_mknod", Attach::TracePoint("syscalls", "sys_exit_mknod")),
                    ("stance_exit_mknodat", Attach::TracePoint("syscalls", "sys_exit_mknodat")),
                ],
                strict: false,
            },
        ],
    },
    Family {
        name: "network",
        hooks: &[
            // connect(2) and io_uring's CONNECT in the kernel's connect path, by kernel objects;
            // datagram sends in the functions their 64-bit and 32-bit syscalls share, and
            // io_uring's SENDMSG and SEND where it issues them (they reach the socket layer
            // directly, past every syscall hook); unix datagrams where the kernel found their peer
            // (security_unix_may_send), by its bound path.
            Hook {
                label: Some("fexit, __sys_connect_file"),
                programs: &[
                    ("stance_fx_connect_file", Attach::FExit("__sys_connect_file")),
                    ("stance_fx_sys_sendto", Attach::FExit("__sys_sendto")),
                    ("stance_fx_sys_sendmsg", Attach::FExit("__sys_sendmsg")),
                    ("stance_fx_sys_sendmmsg", Attach::FExit("__sys_sendmmsg")),
                    ("stance_fx_io_sendmsg", Attach::FExit("io_sendmsg")),
                    ("stance_fx_io_send", Attach::FExit("io_send")),
                    ("stance_fx_unix_may_send", Attach::FExit("security_unix_may_send")),
                ],
                strict: true,
            },
            Hook {
                label: None,
                programs: &[
                    ("stance_fx_connect", Attach::FExit("__x64_sys_connect")),
                    ("stance_fx_sendto", Attach::FExit("__x64_sys_sendto")),
                    ("stance_fx_sendmsg", Attach::FExit("__x64_sys_sendmsg")),
                    ("stance_fx_sendmmsg", Attach::FExit("__x64_sys_sendmmsg")),
                    ("stance_fx_unix_may_send", Attach::FExit("security_unix_may_send")),
                ],
                strict: true,
            },
            Hook {
                label: None,
                programs: &[
                    ("stance_exit_connect", Attach::TracePoint("syscalls", "sys_exit_connect")),
                    ("stance_exit_sendto", Attach::TracePoint("syscalls", "sys_exit_sendto")),
                    ("stance_exit_sendmsg", Attach::TracePoint("syscalls", "sys_exit_sendmsg")),
                    ("stance_exit_sendmmsg", Attach::TracePoint("syscalls", "sys_exit_sendmmsg")),
                ],
                strict: false,
            },
        ],
    },
    Family {
        name: "capabilities",
        hooks: &[
            Hook {
                label: None,
                programs: &[("stance_cap_capable", Attach::FExit("cap_capable"))],
                strict: true,
            },
            Hook { label: None, programs: &[("stance_lsm_capable", Attach::Lsm("capable"))], strict: true },
            Hook {
                label: None,
                programs: &[("stance_tp_capable", Attach::BtfTracePoint("cap_capable"))],
                strict: true,
            },
        ],
    },
    Family {
        name: "ptrace",
        hooks: &[
            Hook {
                label: None,
                programs: &[("stance_fx_ptrace", Attach::FExit("security_ptrace_access_check"))],
                strict: true,
            },
            Hook {
                label: None,
                programs: &[("stance_lsm_ptrace", Attach::Lsm("ptrace_access_check"))],
                strict: true,
            },
        ],
    },
    Family {
        name: "cgroups",
        hooks: &[Hook {
            label: None,
            programs: &[
                ("stance_cgroup_mkdir", Attach::BtfTracePoint("cgroup_mkdir")),
                ("stance_cgroup_rmdir", Attach::BtfTracePoint("cgroup_rmdir")),
            ],
            strict: false,
        }],
    },
];

/// The loaded observation programs. Dropping it detaches everything.
pub struct Probes {
    ebpf: Ebpf,
    pub status: Vec<FamilyStatus>,
}

/// Reads the kernel's loss counters (per cgroup, and those it could not attribute).
pub struct LossCounters {
    per_cgroup: BpfHashMap<MapData, u64, abi::stance_losses>,
    unattributed: PerCpuArray<MapData, u64>,
}

impl LossCounters {
    /// Cumulative counts since load: (cgroup id, [ringbuf, read-failed]) and the unattributed sums.
    pub fn snapshot(
        &self,
    ) -> (Vec<(u64, [u64; abi::STANCE_LOSS_NR as usize])>, [u64; abi::STANCE_LOSS_NR as usize]) {
        let mut per = Vec::new();
        for item in self.per_cgroup.iter().flatten() {
            per.push((item.0, item.1.count));
        }
        let mut un = [0u64; abi::STANCE_LOSS_NR as usize];
        for (i, slot) in un.iter_mut().enumerate() {
            if let Ok(values) = self.unattributed.get(&(i as u32), 0) {
                *slot = values.iter().sum();
            }
        }
        (per, un)
    }
}

/// One line saying why a program failed to load or attach (shared with `enforce`).
pub(crate) fn first_line(err: &ProgramError) -> String {
    // Keep the verifier's last meaningful line: that is where the reason is.
    if let ProgramError::LoadError { io_error, verifier_log } = err {
        let last = verifier_log.to_string();
        let lines: Vec<&str> = last.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        tracing::debug!(verifier_log = %tail, "program load failed (last 40 lines of the verifier log)");
        let summary = ["processed ", "stack depth", "verification time", "max_states", "mark_read"];
        let reason = last
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty() && !summary.iter().any(|s| l.starts_with(s)))
            .unwrap_or("");
        if reason.is_empty() {
            return io_error.to_string();
        }
        return format!("{io_error} ({})", reason.trim());
    }
    let mut s = err.to_string();
    let mut src = std::error::Error::source(err);
    while let Some(e) = src {
        s.push_str(": ");
        s.push_str(&e.to_string());
        src = e.source();
    }
    s
}

impl Probes {
    /// Loads the object and attaches every family it can. Fails only if nothing attaches at all.
    pub fn load(opts: &LoadOptions) -> Result<Probes, ProbeError> {
        if OBSERVE_OBJ.is_empty() {
            return Err(ProbeError::NotBuilt);
        }
        raise_memlock_limit();
        ensure_tracefs()?;
        let btf = Btf::from_sys_fs().map_err(ProbeError::NoBtf)?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global("stance_tgid", &opts.self_tgid, true)
            .override_global(
                "dedup_window_jiffies",
                &window_in_jiffies(opts.dedup_window_ns, tick_ns()),
                true,
            )
            .override_global("argv_max", &opts.argv_max, true)
            .override_global("wakeup_bytes", &opts.wakeup_bytes, true)
            .map_max_entries("events", opts.ringbuf_bytes)
            .load(OBSERVE_OBJ)
            .map_err(ProbeError::Load)?;

        let status: Vec<FamilyStatus> = FAMILIES.iter().map(|f| attach_family(&mut ebpf, &btf, f)).collect();
        if status.iter().all(|s| !s.is_active()) {
            let reasons: Vec<String> = status.iter().map(|s| s.to_string()).collect();
            return Err(ProbeError::NothingAttached(reasons.join("; ")));
        }
        Ok(Probes { ebpf, status })
    }

    /// The ring buffer all events arrive in. Can be taken once.
    pub fn take_ringbuf(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let map = self.ebpf.take_map("events").ok_or(ProbeError::MissingMap("events"))?;
        RingBuf::try_from(map).map_err(|source| ProbeError::Map { name: "events", source })
    }

    pub fn take_loss_counters(&mut self) -> Result<LossCounters, ProbeError> {
        let m = self.ebpf.take_map("cgroup_losses").ok_or(ProbeError::MissingMap("cgroup_losses"))?;
        let per_cgroup =
            BpfHashMap::try_from(m).map_err(|source| ProbeError::Map { name: "cgroup_losses", source })?;
        let m =
            self.ebpf.take_map("unattributed_losses").ok_or(ProbeError::MissingMap("unattributed_losses"))?;
        let unattributed = PerCpuArray::try_from(m)
            .map_err(|source| ProbeError::Map { name: "unattributed_losses", source })?;
        Ok(LossCounters { per_cgroup, unattributed })
    }

    /// The dedup cache and LRU, to read the repeats they still hold once the programs are gone
    /// (dropping `Probes` detaches the programs; maps taken here stay readable).
    pub fn take_dedup_maps(&mut self) -> Result<dedup::DedupMaps, ProbeError> {
        let m = self.ebpf.take_map("dedup_cache").ok_or(ProbeError::MissingMap("dedup_cache"))?;
        let cache =
            PerCpuArray::try_from(m).map_err(|source| ProbeError::Map { name: "dedup_cache", source })?;
        let m = self.ebpf.take_map("dedup").ok_or(ProbeError::MissingMap("dedup"))?;
        let lru = PerCpuHashMap::try_from(m).map_err(|source| ProbeError::Map { name: "dedup", source })?;
        Ok(dedup::DedupMaps::new(cache, lru))
    }
}

/// Attaches the first hook of a family that the kernel takes, and only that one.
fn attach_family(ebpf: &mut Ebpf, btf: &Btf, family: &Family) -> FamilyStatus {
    let mut st = FamilyStatus {
        family: family.name,
        hook: None,
        has_alternatives: family.hooks.len() > 1,
        attached: Vec::new(),
        failed: Vec::new(),
        passed_over: Vec::new(),
    };
    let mut refused = Vec::new();
    for hook in family.hooks {
        let mut attached = Vec::new();
        let mut failed = Vec::new();
        for (prog_name, how) in hook.programs {
            match attach_one(ebpf, btf, prog_name, how) {
                Ok(()) => attached.push(*prog_name),
                Err(e) => {
                    failed.push((*prog_name, e));
                    if hook.strict {
                        break;
                    }
                }
            }
        }
        let label = hook.label();
        if !attached.is_empty() && (failed.is_empty() || !hook.strict) {
            st.hook = Some(label);
            st.attached = attached;
            st.failed = failed;
            st.passed_over = refused;
            return st;
        }
        // Half a hook is not used: what did attach goes, so that the next hook does not report
        // the same events a second time.
        for prog_name in attached {
            unload_one(ebpf, prog_name);
        }
        if failed.is_empty() {
            failed.push((hook.programs.first().map_or("", |(p, _)| *p), "no program".to_owned()));
        }
        tracing::debug!(family = family.name, hook = label, reasons = ?failed, "hook refused; trying the next");
        refused.extend(failed);
    }
    st.failed = refused;
    st
}

/// Detaches and unloads one program that attached (a failure here would leave it reporting).
fn unload_one(ebpf: &mut Ebpf, name: &str) {
    let Some(prog) = ebpf.program_mut(name) else { return };
    let res = match prog {
        aya::programs::Program::FExit(p) => p.unload(),
        aya::programs::Program::TracePoint(p) => p.unload(),
        aya::programs::Program::BtfTracePoint(p) => p.unload(),
        aya::programs::Program::Lsm(p) => p.unload(),
        _ => Ok(()),
    };
    if let Err(e) = res {
        tracing::warn!(program = name, error = %first_line(&e), "cannot unload a program of a refused hook");
    }
}

fn attach_one(ebpf: &mut Ebpf, btf: &Btf, name: &str, how: &Attach) -> Result<(), String> {
    let prog = ebpf.program_mut(name).ok_or_else(|| format!("program {name} missing from the object"))?;
    let res: Result<(), ProgramError> = (|| {
        match how {
            Attach::TracePoint(cat, tp) => {
                let p: &mut TracePoint = prog.try_into()?;
                p.load()?;
                p.attach(cat, tp)?;
            }
            Attach::BtfTracePoint(tp) => {
                let p: &mut BtfTracePoint = prog.try_into()?;
                p.load(tp, btf)?;
                p.attach()?;
            }
            Attach::FExit(func) => {
                let p: &mut FExit = prog.try_into()?;
                p.load(func, btf)?;
                p.attach()?;
            }
            Attach::Lsm(hook) => {
                let p: &mut Lsm = prog.try_into()?;
                p.load(hook, btf)?;
                p.attach()?;
            }
        }
        Ok(())
    })();
    res.map_err(|e| first_line(&e))
}

/// The kernel's tick (one jiffy) in ns: the resolution of its coarse clocks is exactly one tick
/// (TICK_NSEC). When it cannot be read, 10 ms (HZ=100, the slowest tick Linux has): a window
/// counted in shorter real ticks only gets shorter, so repeats are reported more often, never later.
fn tick_ns() -> u64 {
    let mut res = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_getres writes one timespec through a valid pointer to an initialised struct.
    let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) };
    let ns = (res.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(res.tv_nsec as u64);
    if rc == 0 && ns > 0 {
        ns
    } else {
        tracing::warn!(rc, "cannot read the kernel's tick; counting the dedup window in 10 ms ticks");
        10_000_000
    }
}

/// The kernel's dedup window counts jiffies (a load of one variable per event, where a clock
/// read can be a trap on a VM): the daemon's window, rounded up to whole ticks; 0 stays 0 (no
/// dedup).
fn window_in_jiffies(window_ns: u64, tick_ns: u64) -> u64 {
    window_ns.div_ceil(tick_ns.max(1))
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; raising it is harmless after that.
fn raise_memlock_limit() {
    let lim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit with a valid pointer to an initialised struct; failure is ignored because
    // newer kernels do not need it and older ones will report the real error at map creation.
    unsafe {
        libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim);
    }
}

/// Tracepoints are attached by id, read from tracefs: mount it where a fresh host or VM has not.
fn ensure_tracefs() -> Result<(), ProbeError> {
    let mounts = std::fs::read_to_string(crate::paths::MOUNTINFO).unwrap_or_default();
    if mounts.lines().any(|l| l.contains(" - tracefs ") || l.contains(" - debugfs ")) {
        return Ok(());
    }
    let path = crate::paths::TRACEFS;
    let err = |source| ProbeError::Tracefs { path, source };
    std::fs::create_dir_all(path).map_err(err)?;
    let target = std::ffi::CString::new(path).expect("no NUL in a constant");
    let fstype = c"tracefs";
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call; data is null.
    let rc = unsafe { libc::mount(fstype.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{tick_ns, window_in_jiffies, FamilyStatus};

    #[test]
    fn the_dedup_window_becomes_whole_ticks() {
        assert_eq!(window_in_jiffies(10_000_000_000, 4_000_000), 2500);
        assert_eq!(window_in_jiffies(10_000_000_000, 3_333_333), 3001);
        assert_eq!(window_in_jiffies(1, 1_000_000), 1);
        assert_eq!(window_in_jiffies(0, 4_000_000), 0);
    }

    #[test]
    fn the_tick_is_one_of_the_kernels_hz() {
        // CONFIG_HZ is 100, 250, 300 or 1000.
        let hz = (1_000_000_000 + tick_ns() / 2) / tick_ns();
        assert!([100, 250, 300, 1000].contains(&hz), "tick {} ns", tick_ns());
    }

    fn status(hook: Option<&'static str>, alternatives: bool, attached: &[&'static str]) -> FamilyStatus {
        FamilyStatus {
            family: "file opens",
            hook,
            has_alternatives: alternatives,
            attached: attached.to_vec(),
            failed: Vec::new(),
            passed_over: Vec::new(),
        }
    }

    #[test]
    fn the_report_names_the_hook_only_where_there_was_a_choice() {
        assert_eq!(status(Some("fexit"), true, &["a"]).to_string(), "file opens: active (fexit)");
        assert_eq!(status(Some("tp_btf"), false, &["a"]).to_string(), "file opens: active");
        let mut partial = status(Some("syscall tracepoints"), true, &["a"]);
        partial.failed.push(("b", "ENOENT".into()));
        assert_eq!(partial.to_string(), "file opens: active (syscall tracepoints; not attached: b: ENOENT)");
        let mut none = status(None, true, &[]);
        none.failed.push(("b", "EPERM".into()));
        assert_eq!(none.to_string(), "file opens: unavailable: b: EPERM");
    }
}
