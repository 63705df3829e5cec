//! The behaviour-graph vocabulary shared by the pipeline (which produces observations) and the store
//! (which persists them). Nothing here does I/O: these are plain values, so both sides and their tests
//! agree on one shape.

use serde::{Deserialize, Serialize};

/// Kinds of node in a workload's behaviour graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Workload,
    Executable,
    File,
    Endpoint,
    Capability,
}

impl NodeKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            NodeKind::Workload => "workload",
            NodeKind::Executable => "executable",
            NodeKind::File => "file",
            NodeKind::Endpoint => "endpoint",
            NodeKind::Capability => "capability",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "workload" => NodeKind::Workload,
            "executable" => NodeKind::Executable,
            "file" => NodeKind::File,
            "endpoint" => NodeKind::Endpoint,
            "capability" => NodeKind::Capability,
            _ => return None,
        })
    }
}

/// Kinds of edge: what the acting executable did to the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeKind {
    /// source executable (the parent) started the target executable
    Exec,
    /// source executable opened the target file
    Open,
    /// source executable connected (or sent a datagram) to the target endpoint
    Connect,
    /// source executable had a capability checked
    Capable,
    /// source executable had a ptrace access check on a process of the target workload (ptrace(2),
    /// its /proc/PID files, process_vm_readv, ...)
    Ptrace,
}

impl EdgeKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            EdgeKind::Exec => "exec",
            EdgeKind::Open => "open",
            EdgeKind::Connect => "connect",
            EdgeKind::Capable => "capable",
            EdgeKind::Ptrace => "ptrace",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "exec" => EdgeKind::Exec,
            "open" => EdgeKind::Open,
            "connect" => EdgeKind::Connect,
            "capable" => EdgeKind::Capable,
            "ptrace" => EdgeKind::Ptrace,
            _ => return None,
        })
    }
}

/// A node named by its kind and its plain-string label (`/etc/hostname`, `/usr/bin/cat`,
/// `127.0.0.1:8080/tcp`, `unix:/run/x.sock`, `CAP_NET_RAW`, or the workload's name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeRef {
    pub kind: NodeKind,
    pub label: String,
}

impl NodeRef {
    pub fn new(kind: NodeKind, label: impl Into<String>) -> Self {
        NodeRef { kind, label: label.into() }
    }
}

/// Everything that makes two observations the same edge. Counts and times are aggregated per key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeKey {
    /// Name of the workload the acting process belonged to.
    pub workload: String,
    pub kind: EdgeKind,
    /// The acting executable (for `exec`: the parent's executable, or the workload node when the
    /// parent is outside the workload).
    pub source: NodeRef,
    /// The object acted on.
    pub target: NodeRef,
    /// Access mode in canonical text: for `open` a comma list of `read`, `write`, `create`,
    /// `truncate`, and for a change to the name rather than an open, `write` then the change
    /// (`unlink`, `rename-from`, `rename-to`, `link-from`, `link-to`; a truncate by path is
    /// `write,truncate` and an mknod `write,create`, like the opens that do the same); for `connect` `tcp`/`udp`/`unix-stream`/`unix-dgram` plus `,send` for a datagram
    /// sent without connect; for `exec` empty or `memfd`; for `capable` empty.
    pub access: String,
    /// `ok` or the errno name (`ENOENT`), or for `capable` `granted`/`denied`.
    pub result: String,
}

/// Aggregated counters of one edge over one flush window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeStats {
    pub count: u64,
    /// Unix time in nanoseconds.
    pub first_seen: i64,
    /// Unix time in nanoseconds.
    pub last_seen: i64,
}

impl EdgeStats {
    pub fn merge(&mut self, other: EdgeStats) {
        self.count = self.count.saturating_add(other.count);
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
    }
}

/// Why observations were lost. Every loss is counted and stored; nothing is dropped silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossReason {
    /// The kernel could not reserve room in the ring buffer (reader too slow).
    RingbufFull,
    /// The userspace queue between the ring-buffer reader and the aggregator was full.
    QueueFull,
    /// A path did not fit the kernel's buffer or had too many components; the event carries a prefix.
    PathTruncated,
    /// Exec arguments did not fit the kernel's buffer.
    ArgvTruncated,
    /// A kernel object could not be read (e.g. a racing exit); the event was not emitted.
    ReadFailed,
    /// An event from the kernel could not be decoded.
    Malformed,
    /// Repeats the kernel still held at a clean stop for a key whose emitted record never reached
    /// the graph (it was itself lost, or was forgotten after too many other keys), so no edge to
    /// add them to is known.
    UnattributedRepeats,
}

impl LossReason {
    pub const ALL: [LossReason; 7] = [
        LossReason::RingbufFull,
        LossReason::QueueFull,
        LossReason::PathTruncated,
        LossReason::ArgvTruncated,
        LossReason::ReadFailed,
        LossReason::Malformed,
        LossReason::UnattributedRepeats,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            LossReason::RingbufFull => "ringbuf-full",
            LossReason::QueueFull => "queue-full",
            LossReason::PathTruncated => "path-truncated",
            LossReason::ArgvTruncated => "argv-truncated",
            LossReason::ReadFailed => "read-failed",
            LossReason::Malformed => "malformed",
            LossReason::UnattributedRepeats => "unattributed-repeats",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        LossReason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// What kind of thing a workload is; decides how later exports select it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// Everything not attributable to something narrower.
    Host,
    /// A cgroup created by `stance launch --workload NAME`.
    Launched,
    /// A systemd unit (`*.service`).
    Systemd,
    /// A container of a container runtime.
    Container,
}

impl WorkloadKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Host => "host",
            WorkloadKind::Launched => "launched",
            WorkloadKind::Systemd => "systemd",
            WorkloadKind::Container => "container",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "host" => WorkloadKind::Host,
            "launched" => WorkloadKind::Launched,
            "systemd" => WorkloadKind::Systemd,
            "container" => WorkloadKind::Container,
            _ => return None,
        })
    }
}

/// A resolved workload identity. `name` is the key everything else uses (`stance graph NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    pub name: String,
    pub kind: WorkloadKind,
    /// Container runtime (`docker`, `containerd`, `crio`) for containers.
    pub runtime: Option<String>,
    /// Full container id for containers.
    pub container_id: Option<String>,
    /// systemd unit name for units.
    pub unit: Option<String>,
    /// Kubernetes pod UID when the cgroup path carries one (kubepods layouts).
    pub pod_uid: Option<String>,
}

impl Identity {
    pub fn host() -> Self {
        Identity {
            name: "host".to_owned(),
            kind: WorkloadKind::Host,
            runtime: None,
            container_id: None,
            unit: None,
            pod_uid: None,
        }
    }
}

/// A cgroup seen in one flush window, with the workload it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupObs {
    pub cgroup_id: u64,
    /// Path relative to the cgroup2 mount, starting with `/`.
    pub path: String,
    pub identity: Identity,
    /// Unix time in nanoseconds.
    pub seen_at: i64,
}

/// Losses counted in one flush window. `workload` is None where the kernel could not attribute them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LossObs {
    pub workload: Option<String>,
    pub reason: LossReason,
    pub count: u64,
    /// Unix time in nanoseconds (end of the window the losses were counted in).
    pub at: i64,
}

/// Attributes of an executable learnt in the kernel (device and inode let the enforcer match the file,
/// not only its name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutableObs {
    pub workload: String,
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    /// True for memfd and other anonymous executables.
    pub memfd: bool,
    /// A bounded sample of the last argv seen (NUL separators replaced by spaces).
    pub argv: Option<String>,
}

/// Everything the pipeline hands the store in one transaction.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub cgroups: Vec<CgroupObs>,
    pub edges: Vec<(EdgeKey, EdgeStats)>,
    pub executables: Vec<ExecutableObs>,
    pub losses: Vec<LossObs>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.cgroups.is_empty()
            && self.edges.is_empty()
            && self.executables.is_empty()
            && self.losses.is_empty()
    }
}
