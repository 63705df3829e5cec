//! Events → per-cgroup behaviour edges, aggregated in memory for one flush window.
//!
//! Pure and synchronous: the task around it (`pipeline::run_aggregator`) feeds it events and takes
//! a `Window` every flush interval. Cgroups stay raw ids here; turning them into workloads needs the
//! filesystem and happens off the event path, in the writer.

use std::{collections::HashMap, num::NonZeroUsize};

use super::key_owners::{Attribution, KeyOwner, KeyOwners};
use crate::{
    model::{EdgeKind, EdgeStats, LossReason, NodeKind, NodeRef},
    probes::{
        abi,
        decode::{Body, Destination, Event},
        dedup::{self, DedupKey},
    },
};

/// Label of the placeholder source node of an exec whose parent is outside the workload; the writer
/// replaces it with the workload's own node once the workload's name is known.
pub const WORKLOAD_PLACEHOLDER: &str = "";

/// An edge before its cgroup has been resolved to a workload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PendingEdge {
    pub cgroup_id: u64,
    pub kind: EdgeKind,
    pub source: NodeRef,
    pub target: NodeRef,
    pub access: String,
    pub result: String,
    /// For ptrace: the target's cgroup, whose workload the writer makes the target node.
    pub target_cgroup: Option<u64>,
}

/// The last exec of one binary in one cgroup: what the store keeps on the executable node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingExecutable {
    pub dev: u64,
    pub ino: u64,
    pub memfd: bool,
    pub argv: Option<String>,
}

/// A cgroup appearing or going away, in the order the kernel reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupChange {
    Created { id: u64, path: String },
    Removed { id: u64 },
}

/// Everything aggregated in one flush window.
#[derive(Debug, Default)]
pub struct Window {
    pub edges: HashMap<PendingEdge, EdgeStats>,
    pub executables: HashMap<(u64, String), PendingExecutable>,
    pub cgroup_changes: Vec<CgroupChange>,
    /// Every cgroup that acted in this window, with the last time it did (unix ns).
    pub active_cgroups: HashMap<u64, i64>,
    /// Losses counted in userspace (truncations, queue overflow, malformed records).
    pub losses: HashMap<(Option<u64>, LossReason), u64>,
    pub events: u64,
    pub processes_started: u64,
    pub processes_exited: u64,
}

impl Window {
    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
            && self.executables.is_empty()
            && self.cgroup_changes.is_empty()
            && self.losses.is_empty()
            && self.active_cgroups.is_empty()
    }

    pub fn add_loss(&mut self, cgroup_id: Option<u64>, reason: LossReason, n: u64) {
        if n > 0 {
            *self.losses.entry((cgroup_id, reason)).or_default() += n;
        }
    }
}

/// Stateful aggregator: one per daemon.
pub struct Aggregator {
    /// CLOCK_BOOTTIME → unix time offset (ns), taken once at start.
    boot_to_unix_ns: i64,
    /// Longest argv sample kept per executable, in bytes.
    argv_bytes: usize,
    window: Window,
    /// What each dedup key's last record became, for the repeats the kernel holds at stop.
    owners: KeyOwners,
}

impl Aggregator {
    /// Remembers as many dedup keys as this machine's kernel side can hold.
    pub fn new(boot_to_unix_ns: i64, argv_bytes: usize) -> Self {
        let keys = dedup::kernel_key_capacity(dedup::possible_cpus());
        Self::with_key_capacity(
            boot_to_unix_ns,
            argv_bytes,
            NonZeroUsize::new(keys).unwrap_or(NonZeroUsize::MIN),
        )
    }

    pub fn with_key_capacity(boot_to_unix_ns: i64, argv_bytes: usize, keys: NonZeroUsize) -> Self {
        Aggregator { boot_to_unix_ns, argv_bytes, window: Window::default(), owners: KeyOwners::new(keys) }
    }

    /// Distinct edges held: the pipeline flushes early when this grows past its bound.
    pub fn pending_edges(&self) -> usize {
        self.window.edges.len()
    }

    pub fn take_window(&mut self) -> Window {
        self.owners.start_window();
        std::mem::take(&mut self.window)
    }

    pub fn add_loss(&mut self, cgroup_id: Option<u64>, reason: LossReason, n: u64) {
        self.window.add_loss(cgroup_id, reason, n);
    }

    /// Adds the repeats the kernel still held at a clean stop (no record will carry them now) to
    /// the edges their keys were last emitted as; a count whose key has no known edge is a loss.
    /// Counts only: an edge's times stay as observed.
    pub fn add_held_repeats(&mut self, held: impl IntoIterator<Item = (DedupKey, u64)>) {
        let w = &mut self.window;
        for (key, n) in held {
            if n == 0 {
                continue;
            }
            match self.owners.attribute(&key) {
                Attribution::Edge { edge, at } => match w.edges.get_mut(edge) {
                    Some(stats) => stats.count = stats.count.saturating_add(n),
                    None => {
                        w.edges.insert(edge.clone(), EdgeStats { count: n, first_seen: at, last_seen: at });
                    }
                },
                Attribution::Loss { cgroup_id, reason } => w.add_loss(Some(cgroup_id), reason, n),
                Attribution::Ignored => {}
            }
        }
    }

    pub fn ingest(&mut self, ev: Event) {
        let w = &mut self.window;
        w.events += 1;
        let at = self.boot_to_unix_ns.saturating_add(ev.boot_ns as i64);
        let count = 1 + u64::from(ev.repeat);
        let cg = ev.cgroup_id;
        if ev.has(abi::STANCE_F_EXE_TRUNC) {
            w.add_loss(Some(cg), LossReason::PathTruncated, 1);
        }
        let actor = actor_node(&ev);
        let result = result_text(ev.ret);
        let edge = match ev.body {
            Body::CgroupMkdir { id, path } => {
                w.cgroup_changes.push(CgroupChange::Created { id, path });
                return;
            }
            Body::CgroupRmdir { id, .. } => {
                w.cgroup_changes.push(CgroupChange::Removed { id });
                return;
            }
            Body::Fork { .. } => {
                w.processes_started += 1;
                w.active_cgroups.insert(cg, at);
                return;
            }
            Body::Exit { .. } => {
                w.processes_exited += 1;
                return;
            }
            Body::Exec { path, dev, ino, argv, parent_exe, parent_outside, anonymous, .. } => {
                if ev.flags & abi::STANCE_F_PATH_TRUNC != 0 {
                    w.add_loss(Some(cg), LossReason::PathTruncated, 1);
                    return;
                }
                if ev.flags & abi::STANCE_F_ARGV_TRUNC != 0 {
                    w.add_loss(Some(cg), LossReason::ArgvTruncated, 1);
                }
                let target = NodeRef::new(NodeKind::Executable, exec_label(&path, anonymous));
                let source = if parent_outside {
                    NodeRef::new(NodeKind::Workload, WORKLOAD_PLACEHOLDER)
                } else {
                    NodeRef::new(NodeKind::Executable, parent_exe.unwrap_or_else(|| "[unknown]".to_owned()))
                };
                let mut sample = argv.join(" ");
                if sample.len() > self.argv_bytes {
                    let mut cut = self.argv_bytes;
                    while !sample.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    sample.truncate(cut);
                }
                w.executables.insert(
                    (cg, target.label.clone()),
                    PendingExecutable {
                        dev,
                        ino,
                        memfd: anonymous,
                        argv: if sample.is_empty() { None } else { Some(sample) },
                    },
                );
                PendingEdge {
                    cgroup_id: cg,
                    kind: EdgeKind::Exec,
                    source,
                    target,
                    access: if anonymous { "memfd".to_owned() } else { String::new() },
                    result: "ok".to_owned(),
                    target_cgroup: None,
                }
            }
            Body::Open { path, access, op, .. } => {
                // The record stands for itself and the repeats it reports, and so do later ones.
                if ev.flags & abi::STANCE_F_PATH_TRUNC != 0 {
                    w.add_loss(Some(cg), LossReason::PathTruncated, count);
                    if let Some(key) = ev.dedup {
                        self.owners.note(key, KeyOwner::Loss(LossReason::PathTruncated));
                    }
                    return;
                }
                // Pipes, sockets and anonymous inodes reached through /proc/self/fd are not files
                // a policy can name.
                if ev.flags & abi::STANCE_F_ANON != 0 {
                    if let Some(key) = ev.dedup {
                        self.owners.note(key, KeyOwner::Ignored);
                    }
                    return;
                }
                PendingEdge {
                    cgroup_id: cg,
                    kind: EdgeKind::Open,
                    source: actor,
                    target: NodeRef::new(NodeKind::File, path),
                    access: match op.token() {
                        Some(token) => format!("{},{token}", access_text(access)),
                        None => access_text(access),
                    },
                    result,
                    target_cgroup: None,
                }
            }
            Body::Connect { dest, sock_type, protocol, send } => {
                let (label, access) = endpoint_label(&dest, sock_type, protocol);
                PendingEdge {
                    cgroup_id: cg,
                    kind: EdgeKind::Connect,
                    source: actor,
                    target: NodeRef::new(NodeKind::Endpoint, label),
                    access: if send { format!("{access},send") } else { access },
                    result,
                    target_cgroup: None,
                }
            }
            Body::Capable { cap, granted, child_userns, noaudit } => {
                let mut access = Vec::new();
                if child_userns {
                    access.push("userns");
                }
                if noaudit {
                    access.push("noaudit");
                }
                PendingEdge {
                    cgroup_id: cg,
                    kind: EdgeKind::Capable,
                    source: actor,
                    target: NodeRef::new(NodeKind::Capability, capability_name(cap)),
                    access: access.join(","),
                    result: if granted { "granted" } else { "denied" }.to_owned(),
                    target_cgroup: None,
                }
            }
            Body::Ptrace { target_cgroup, attach, noaudit, .. } => {
                let mut access = vec![if attach { "attach" } else { "read" }];
                if noaudit {
                    access.push("noaudit");
                }
                PendingEdge {
                    cgroup_id: cg,
                    kind: EdgeKind::Ptrace,
                    source: actor,
                    target: NodeRef::new(NodeKind::Workload, WORKLOAD_PLACEHOLDER),
                    access: access.join(","),
                    result,
                    target_cgroup: Some(target_cgroup),
                }
            }
        };
        w.active_cgroups.insert(cg, at);
        if let Some(key) = ev.dedup {
            self.owners.note_edge(key, &edge, at);
        }
        let stats = EdgeStats { count, first_seen: at, last_seen: at };
        w.edges.entry(edge).and_modify(|s| s.merge(stats)).or_insert(stats);
    }
}

/// The acting executable as a node; kernel threads have none and are named by their comm.
fn actor_node(ev: &Event) -> NodeRef {
    match &ev.exe {
        Some(exe) => NodeRef::new(NodeKind::Executable, exe.clone()),
        None => NodeRef::new(NodeKind::Executable, format!("[{}]", ev.comm)),
    }
}

fn exec_label(path: &str, anonymous: bool) -> String {
    if anonymous {
        // The walker writes an anonymous file's name as "/<name>"; its name is all there is.
        path.trim_start_matches('/').to_owned()
    } else {
        path.to_owned()
    }
}

/// `ok`, or the errno's name.
pub fn result_text(ret: i32) -> String {
    if ret >= 0 {
        return "ok".to_owned();
    }
    format!("{:?}", nix::errno::Errno::from_raw(-ret))
}

/// Canonical access text of an open.
pub fn access_text(bits: u32) -> String {
    let mut parts = Vec::with_capacity(4);
    if bits & abi::STANCE_ACC_READ != 0 {
        parts.push("read");
    }
    if bits & abi::STANCE_ACC_WRITE != 0 {
        parts.push("write");
    }
    if bits & abi::STANCE_ACC_CREATE != 0 {
        parts.push("create");
    }
    if bits & abi::STANCE_ACC_TRUNC != 0 {
        parts.push("truncate");
    }
    if parts.is_empty() {
        // O_PATH: a handle on the name, no data access.
        return "path".to_owned();
    }
    parts.join(",")
}

/// `127.0.0.1:8080/tcp`, `[::1]:53/udp`, `unix:/run/x.sock`, `unix:@name`, with the access text
/// naming the transport (`tcp`, `udp`, `unix-stream`, ...).
pub fn endpoint_label(dest: &Destination, sock_type: u16, protocol: u16) -> (String, String) {
    match dest {
        Destination::Inet { addr, port } => {
            let proto = match i32::from(protocol) {
                libc::IPPROTO_TCP => "tcp".to_owned(),
                libc::IPPROTO_UDP => "udp".to_owned(),
                libc::IPPROTO_ICMP => "icmp".to_owned(),
                libc::IPPROTO_ICMPV6 => "icmpv6".to_owned(),
                libc::IPPROTO_SCTP => "sctp".to_owned(),
                libc::IPPROTO_MPTCP => "mptcp".to_owned(),
                0 if i32::from(sock_type) == libc::SOCK_STREAM => "tcp".to_owned(),
                0 if i32::from(sock_type) == libc::SOCK_DGRAM => "udp".to_owned(),
                p => format!("proto{p}"),
            };
            let host = match addr {
                std::net::IpAddr::V4(a) => a.to_string(),
                std::net::IpAddr::V6(a) => format!("[{a}]"),
            };
            (format!("{host}:{port}/{proto}"), proto)
        }
        Destination::UnixPath(p) => (format!("unix:{p}"), unix_kind(sock_type)),
        Destination::UnixAbstract(n) => (format!("unix:@{n}"), unix_kind(sock_type)),
    }
}

fn unix_kind(sock_type: u16) -> String {
    match i32::from(sock_type) {
        libc::SOCK_STREAM => "unix-stream".to_owned(),
        libc::SOCK_DGRAM => "unix-dgram".to_owned(),
        libc::SOCK_SEQPACKET => "unix-seqpacket".to_owned(),
        t => format!("unix-type{t}"),
    }
}

/// `CAP_NET_RAW`, or `CAP_<n>` for a number newer than the caps crate knows.
pub fn capability_name(cap: u32) -> String {
    caps::all()
        .into_iter()
        .find(|c| u32::from(c.index()) == cap)
        .map(|c| c.to_string())
        .unwrap_or_else(|| format!("CAP_{cap}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::decode::{decode, encode};
    use std::collections::BTreeSet;

    fn agg() -> Aggregator {
        Aggregator::new(1_000, 64)
    }

    #[test]
    fn repeats_aggregate_into_one_edge_with_counts_and_times() {
        let mut a = agg();
        let mut rec = encode::open(9, "/usr/bin/cat", "/etc/hostname", abi::STANCE_ACC_READ);
        a.ingest(decode(&rec).unwrap());
        // Same edge later, with 4 suppressed repeats reported by the kernel.
        let mut ev = decode(&rec).unwrap();
        ev.boot_ns += 5_000;
        ev.repeat = 4;
        a.ingest(ev);
        rec = encode::open(9, "/usr/bin/cat", "/etc/hostname", abi::STANCE_ACC_READ | abi::STANCE_ACC_WRITE);
        a.ingest(decode(&rec).unwrap());
        let w = a.take_window();
        assert_eq!(w.edges.len(), 2, "read and read-write are distinct edges");
        let read = w.edges.iter().find(|(k, _)| k.access == "read").map(|(k, s)| (k.clone(), *s)).unwrap();
        assert_eq!(read.0.target, NodeRef::new(NodeKind::File, "/etc/hostname"));
        assert_eq!(read.0.source, NodeRef::new(NodeKind::Executable, "/usr/bin/cat"));
        assert_eq!(read.1.count, 6);
        assert_eq!(read.1.first_seen, 1_000 + 1_000_000_000);
        assert_eq!(read.1.last_seen, 1_000 + 1_000_005_000);
        assert!(a.take_window().is_empty());
    }

    #[test]
    fn name_changes_are_write_edges_that_say_which_change() {
        let mut a = agg();
        let w = abi::STANCE_ACC_WRITE;
        for (path, access, op) in [
            ("/data/temp-1.rdb", w, abi::STANCE_OP_RENAME_FROM),
            ("/data/dump.rdb", w, abi::STANCE_OP_RENAME_TO),
            ("/data/old.log", w, abi::STANCE_OP_UNLINK),
            ("/data/a", w, abi::STANCE_OP_LINK_FROM),
            ("/data/b", w, abi::STANCE_OP_LINK_TO),
            ("/data/t", w | abi::STANCE_ACC_TRUNC, abi::STANCE_OP_TRUNCATE),
            ("/data/fifo", w | abi::STANCE_ACC_CREATE, abi::STANCE_OP_MKNOD),
        ] {
            a.ingest(decode(&encode::name_change(9, "/usr/bin/redis", path, access, op)).unwrap());
        }
        let got: BTreeSet<(String, String)> =
            a.take_window().edges.keys().map(|k| (k.target.label.clone(), k.access.clone())).collect();
        let want: BTreeSet<(String, String)> = [
            ("/data/temp-1.rdb", "write,rename-from"),
            ("/data/dump.rdb", "write,rename-to"),
            ("/data/old.log", "write,unlink"),
            ("/data/a", "write,link-from"),
            ("/data/b", "write,link-to"),
            ("/data/t", "write,truncate"),
            ("/data/fifo", "write,create"),
        ]
        .into_iter()
        .map(|(p, a)| (p.to_owned(), a.to_owned()))
        .collect();
        assert_eq!(got, want);
    }

    /// A read open by /bin/x with these record flags.
    fn flagged_open(cgroup_id: u64, flags: u32, path: &[u8]) -> Vec<u8> {
        let body = abi::stance_open_body { access: 1, ..Default::default() };
        encode::record(
            abi::STANCE_EV_OPEN,
            cgroup_id,
            1,
            flags,
            0,
            encode::as_bytes(&body),
            [b"/bin/x", path, b"", b""],
        )
    }

    fn keyed(mut rec: Vec<u8>, obj: u64) -> (Vec<u8>, DedupKey) {
        let key = abi::stance_dedup_key {
            cgroup_id: 9,
            obj_a: obj,
            obj_b: 0xffff_8880_0000_1000,
            exe_ino: 5,
            exe_dev: 1,
            kind_bits: abi::STANCE_EV_OPEN << 16 | abi::STANCE_ACC_READ,
        };
        encode::set_dedup(&mut rec, key);
        (rec, DedupKey::from_abi(&key).unwrap())
    }

    #[test]
    fn repeats_held_at_stop_join_the_edge_their_key_was_emitted_as() {
        let mut a = agg();
        let (hosts, hosts_key) =
            keyed(encode::open(9, "/usr/bin/cat", "/etc/hosts", abi::STANCE_ACC_READ), 1);
        let (passwd, passwd_key) =
            keyed(encode::open(9, "/usr/bin/cat", "/etc/passwd", abi::STANCE_ACC_READ), 2);
        a.ingest(decode(&hosts).unwrap());
        // /etc/passwd's edge went out in an earlier window.
        let mut ev = decode(&passwd).unwrap();
        ev.boot_ns += 7_000;
        a.ingest(ev);
        let earlier = a.take_window();
        assert_eq!(earlier.edges.len(), 2);
        a.ingest(decode(&hosts).unwrap());

        let unknown = DedupKey { obj_a: 3, ..hosts_key };
        a.add_held_repeats([(hosts_key, 398), (passwd_key, 20), (unknown, 6), (passwd_key, 0)]);
        let w = a.take_window();
        let by_target =
            |w: &Window, t: &str| w.edges.iter().find(|(k, _)| k.target.label == t).map(|(_, s)| *s).unwrap();
        assert_eq!(by_target(&w, "/etc/hosts").count, 1 + 398);
        let late = by_target(&w, "/etc/passwd");
        assert_eq!(late.count, 20);
        // A late count carries the time of the record it belongs to: nothing new was observed.
        assert_eq!((late.first_seen, late.last_seen), (1_000 + 1_000_007_000, 1_000 + 1_000_007_000));
        assert_eq!(w.losses.get(&(Some(9), LossReason::UnattributedRepeats)), Some(&6));
        assert_eq!(w.losses.len(), 1);
    }

    #[test]
    fn repeats_of_truncated_and_anonymous_opens_stay_what_the_record_was() {
        let mut a = agg();
        let (trunc, trunc_key) = keyed(flagged_open(9, abi::STANCE_F_PATH_TRUNC, b"/a/b/c"), 1);
        let (anon, anon_key) = keyed(flagged_open(9, abi::STANCE_F_ANON, b"/pipe:[1]"), 2);
        let mut ev = decode(&trunc).unwrap();
        ev.repeat = 2;
        a.ingest(ev);
        a.ingest(decode(&anon).unwrap());
        a.add_held_repeats([(trunc_key, 4), (anon_key, 50)]);
        let w = a.take_window();
        assert!(w.edges.is_empty());
        assert_eq!(w.losses.get(&(Some(9), LossReason::PathTruncated)), Some(&(3 + 4)));
        assert_eq!(w.losses.len(), 1, "an anonymous file's repeats are no loss: {:?}", w.losses);
    }

    #[test]
    fn truncated_paths_are_losses_not_files() {
        let mut a = agg();
        a.ingest(decode(&flagged_open(3, abi::STANCE_F_PATH_TRUNC, b"/a/b/c")).unwrap());
        let w = a.take_window();
        assert!(w.edges.is_empty());
        assert_eq!(w.losses.get(&(Some(3), LossReason::PathTruncated)), Some(&1));
    }

    #[test]
    fn exec_from_outside_the_workload_starts_at_the_workload_node() {
        let mut a = agg();
        let body = abi::stance_exec_body { ino: 5, dev: 1, ..Default::default() };
        let rec = encode::record(
            abi::STANCE_EV_EXEC,
            3,
            1,
            abi::STANCE_F_PARENT_OUTSIDE,
            0,
            encode::as_bytes(&body),
            [b"", b"/usr/bin/sleep", b"/usr/local/bin/stance", b"sleep\x001\0"],
        );
        a.ingest(decode(&rec).unwrap());
        let w = a.take_window();
        let (k, _) = w.edges.iter().next().unwrap();
        assert_eq!(k.kind, EdgeKind::Exec);
        assert_eq!(k.source, NodeRef::new(NodeKind::Workload, WORKLOAD_PLACEHOLDER));
        assert_eq!(k.target.label, "/usr/bin/sleep");
        let exe = &w.executables[&(3, "/usr/bin/sleep".to_owned())];
        assert_eq!(exe.argv.as_deref(), Some("sleep 1"));
        assert_eq!(exe.ino, 5);
    }

    #[test]
    fn labels() {
        assert_eq!(
            access_text(abi::STANCE_ACC_WRITE | abi::STANCE_ACC_CREATE | abi::STANCE_ACC_TRUNC),
            "write,create,truncate"
        );
        assert_eq!(access_text(0), "path");
        assert_eq!(result_text(-2), "ENOENT");
        assert_eq!(result_text(-111), "ECONNREFUSED");
        assert_eq!(capability_name(13), "CAP_NET_RAW");
        let v4 = Destination::Inet { addr: "127.0.0.1".parse().unwrap(), port: 8080 };
        assert_eq!(endpoint_label(&v4, 1, 6), ("127.0.0.1:8080/tcp".to_owned(), "tcp".to_owned()));
        let v6 = Destination::Inet { addr: "::1".parse().unwrap(), port: 53 };
        assert_eq!(endpoint_label(&v6, 2, 17).0, "[::1]:53/udp");
        assert_eq!(endpoint_label(&Destination::UnixAbstract("x".into()), 1, 0).0, "unix:@x");
        assert_eq!(
            endpoint_label(&Destination::UnixPath("/run/a".into()), 2, 0),
            ("unix:/run/a".into(), "unix-dgram".into())
        );
    }
}
