//! Behaviour graph → allowlist policy: exactly what the workload was seen doing, nothing more.
//!
//! This is the stand-in until the recommender generalises graphs (directory rules, port ranges).
//! Every rule comes from the graph; nothing is added for what a workload might need that the graph
//! cannot show, so an action that was never observed is denied in enforce mode.
//!
//! - executables: every executable node (binaries run, and binaries seen acting), pinned to device
//!   and inode where the kernel reported them; memfd executables by name only (each memfd is a new
//!   inode). Kernel threads and unknown parents (`[name]`) are not binaries and are left out.
//! - files: one exact rule per file opened successfully, read if any successful open read it, write
//!   if any wrote, created or truncated it. Failed opens (ENOENT, EACCES, a previous deny) add nothing;
//!   O_PATH handles (`path`) carry no data access and add nothing.
//! - network: one rule per endpoint the workload connected or sent to — a host prefix (/32, /128)
//!   with that port and protocol — whatever the peer answered (a refused or in-progress connect is
//!   still the workload's normal behaviour), except attempts that were themselves denied (EPERM,
//!   EACCES). Unix endpoints become unix socket paths (`@name` for the abstract namespace).
//! - capabilities: every capability whose check was granted.
//! - ptrace: same-workload when a process of the workload was seen accessing another one of it
//!   (ptrace(2), /proc/PID files), else none.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    str::FromStr,
};

use ipnet::IpNet;

use super::policy::{ExecRule, FileRule, NetRule, Policy, PtraceRule};
use crate::{
    model::{EdgeKind, NodeKind},
    store::Graph,
};

/// The allowlist of everything in `graph`. Pure: same graph, same policy (rules sorted).
pub fn from_graph(graph: &Graph) -> Policy {
    let mut executables = BTreeSet::new();
    for node in graph.nodes.iter().filter(|n| n.kind == NodeKind::Executable) {
        let memfd = node.memfd == Some(true);
        if !memfd && !node.label.starts_with('/') {
            continue;
        }
        let (dev, ino) = match (node.dev, node.ino) {
            (Some(dev), Some(ino)) if !memfd && ino != 0 => (Some(dev), Some(ino)),
            _ => (None, None),
        };
        executables.insert(ExecRule { path: node.label.clone(), dev, ino, from: vec![] });
    }

    // path → (read, write)
    let mut files: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
    let mut network = BTreeSet::new();
    let mut unix = BTreeSet::new();
    let mut capabilities = BTreeSet::new();
    let mut ptrace = PtraceRule::None;
    for edge in &graph.edges {
        match edge.kind {
            EdgeKind::Open if edge.result == "ok" => {
                let (read, write) = open_access(&edge.access);
                if read || write {
                    let rule = files.entry(edge.target_label.as_str()).or_default();
                    rule.0 |= read;
                    rule.1 |= write;
                }
            }
            EdgeKind::Connect if !matches!(edge.result.as_str(), "EPERM" | "EACCES") => {
                match endpoint(&edge.target_label) {
                    Some(Endpoint::Inet(rule)) => {
                        network.insert(rule);
                    }
                    Some(Endpoint::Unix(path)) => {
                        unix.insert(path.to_owned());
                    }
                    None => {}
                }
            }
            EdgeKind::Capable if edge.result == "granted" => {
                if let Some(cap) = capability_number(&edge.target_label) {
                    capabilities.insert(cap);
                }
            }
            // Of processes of the workload itself: the only ptrace a policy can allow.
            EdgeKind::Ptrace if edge.result == "ok" && edge.target_label == graph.workload.name => {
                ptrace = PtraceRule::SameWorkload;
            }
            _ => {}
        }
    }

    Policy {
        executables: executables.into_iter().collect(),
        files: files
            .into_iter()
            .map(|(path, (read, write))| FileRule {
                path: path.to_owned(),
                prefix: false,
                children: false,
                read,
                write,
            })
            .collect(),
        network: network.into_iter().collect(),
        unix: unix.into_iter().collect(),
        capabilities,
        ptrace,
    }
}

/// (read, write) of an open edge's access text (`read,write,create,truncate`, or `path`).
fn open_access(access: &str) -> (bool, bool) {
    let mut read = false;
    let mut write = false;
    for part in access.split(',') {
        match part {
            "read" => read = true,
            "write" | "create" | "truncate" => write = true,
            _ => {}
        }
    }
    (read, write)
}

enum Endpoint<'a> {
    Inet(NetRule),
    Unix(&'a str),
}

/// Parses an endpoint label: `a.b.c.d:port/proto`, `[v6]:port/proto`, `unix:PATH`, `unix:@name`.
fn endpoint(label: &str) -> Option<Endpoint<'_>> {
    if let Some(path) = label.strip_prefix("unix:") {
        return (!path.is_empty()).then_some(Endpoint::Unix(path));
    }
    let (host_port, protocol) = label.rsplit_once('/')?;
    let (host, port) = host_port.rsplit_once(':')?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let addr = IpAddr::from_str(host).ok()?;
    let port: u16 = port.parse().ok()?;
    Some(Endpoint::Inet(NetRule {
        net: IpNet::from(addr),
        port_lo: port,
        port_hi: port,
        protocol: (!protocol.is_empty()).then(|| protocol.to_owned()),
    }))
}

/// `CAP_NET_RAW` → 13; `CAP_41` (a number the caps crate had no name for) → 41.
fn capability_number(label: &str) -> Option<u32> {
    if let Ok(cap) = caps::Capability::from_str(label) {
        return Some(u32::from(cap.index()));
    }
    label.strip_prefix("CAP_")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::WorkloadKind,
        store::{GraphEdge, GraphLosses, GraphNode, WorkloadInfo},
    };

    fn node(kind: NodeKind, label: &str) -> GraphNode {
        GraphNode {
            id: format!("n-{label}"),
            kind,
            label: label.to_owned(),
            dev: None,
            ino: None,
            memfd: None,
            argv: None,
            first_seen: String::new(),
            last_seen: String::new(),
        }
    }

    fn edge(kind: EdgeKind, actor: &str, target: &str, access: &str, result: &str) -> GraphEdge {
        GraphEdge {
            id: format!("e-{target}-{access}-{result}"),
            kind,
            source: format!("n-{actor}"),
            target: format!("n-{target}"),
            source_label: actor.to_owned(),
            target_label: target.to_owned(),
            actor: actor.to_owned(),
            access: access.to_owned(),
            result: result.to_owned(),
            count: 1,
            first_seen: String::new(),
            last_seen: String::new(),
        }
    }

    fn graph() -> Graph {
        let py = "/usr/bin/python3.11";
        let mut nodes = vec![
            node(NodeKind::Workload, "web"),
            GraphNode { dev: Some(2049), ino: Some(77), ..node(NodeKind::Executable, py) },
            node(NodeKind::Executable, "/usr/bin/cat"),
            GraphNode {
                memfd: Some(true),
                dev: Some(1),
                ino: Some(9),
                ..node(NodeKind::Executable, "memfd:jit")
            },
            node(NodeKind::Executable, "[kworker/0:1]"),
            node(NodeKind::Executable, "[unknown]"),
        ];
        let edges = vec![
            edge(EdgeKind::Exec, "web", py, "", "ok"),
            edge(EdgeKind::Exec, py, "/usr/bin/cat", "", "ok"),
            edge(EdgeKind::Open, py, "/etc/hosts", "read", "ok"),
            edge(EdgeKind::Open, "/usr/bin/cat", "/etc/hosts", "read", "ok"),
            edge(EdgeKind::Open, py, "/srv/out.txt", "write,create,truncate", "ok"),
            edge(EdgeKind::Open, py, "/srv/log", "read", "ok"),
            edge(EdgeKind::Open, py, "/srv/log", "write", "ok"),
            edge(EdgeKind::Open, py, "/etc/missing.conf", "read", "ENOENT"),
            edge(EdgeKind::Open, py, "/etc/shadow", "read", "EACCES"),
            edge(EdgeKind::Open, py, "/srv/dir", "path", "ok"),
            // A save by rename: the temporary name and the one it replaces are both written.
            edge(EdgeKind::Open, py, "/srv/state.tmp", "write,rename-from", "ok"),
            edge(EdgeKind::Open, py, "/srv/state", "write,rename-to", "ok"),
            edge(EdgeKind::Open, py, "/srv/gone", "write,unlink", "ENOENT"),
            edge(EdgeKind::Connect, py, "127.0.0.1:8080/tcp", "tcp", "ok"),
            edge(EdgeKind::Connect, py, "10.0.0.2:53/udp", "udp,send", "ok"),
            edge(EdgeKind::Connect, py, "[2001:db8::1]:443/tcp", "tcp", "EINPROGRESS"),
            edge(EdgeKind::Connect, py, "127.0.0.1:9/tcp", "tcp", "ECONNREFUSED"),
            edge(EdgeKind::Connect, py, "192.0.2.1:25/tcp", "tcp", "EPERM"),
            edge(EdgeKind::Connect, py, "unix:/run/app.sock", "unix-stream", "ok"),
            edge(EdgeKind::Connect, py, "unix:@jit-lock", "unix-dgram", "ok"),
            edge(EdgeKind::Capable, py, "CAP_NET_BIND_SERVICE", "", "granted"),
            edge(EdgeKind::Capable, py, "CAP_SYS_ADMIN", "", "denied"),
            edge(EdgeKind::Capable, py, "CAP_41", "", "granted"),
        ];
        for e in &edges {
            if !nodes.iter().any(|n| n.label == e.target_label) {
                let kind = match e.kind {
                    EdgeKind::Exec => NodeKind::Executable,
                    EdgeKind::Open => NodeKind::File,
                    EdgeKind::Connect => NodeKind::Endpoint,
                    EdgeKind::Capable => NodeKind::Capability,
                    EdgeKind::Ptrace => NodeKind::Workload,
                };
                nodes.push(node(kind, &e.target_label));
            }
        }
        Graph {
            workload: WorkloadInfo {
                name: "web".into(),
                kind: WorkloadKind::Launched,
                runtime: None,
                container_id: None,
                unit: None,
                pod_uid: None,
                first_seen: String::new(),
                last_seen: String::new(),
            },
            nodes,
            edges,
            losses: GraphLosses::default(),
        }
    }

    #[test]
    fn executables_are_binaries_with_identity_where_known() {
        let p = from_graph(&graph());
        assert_eq!(
            p.executables,
            [
                ExecRule { path: "/usr/bin/cat".into(), dev: None, ino: None, from: vec![] },
                ExecRule { path: "/usr/bin/python3.11".into(), dev: Some(2049), ino: Some(77), from: vec![] },
                // A memfd is a new inode every time: its name is all a rule can hold.
                ExecRule { path: "memfd:jit".into(), dev: None, ino: None, from: vec![] },
            ]
        );
    }

    #[test]
    fn files_split_read_and_write_and_skip_failures() {
        let p = from_graph(&graph());
        let rule = |path: &str, read, write| FileRule {
            path: path.into(),
            prefix: false,
            children: false,
            read,
            write,
        };
        assert_eq!(
            p.files,
            [
                rule("/etc/hosts", true, false),
                rule("/srv/log", true, true),
                rule("/srv/out.txt", false, true),
                rule("/srv/state", false, true),
                rule("/srv/state.tmp", false, true),
            ],
            "names changed are written; ENOENT, EACCES and O_PATH opens add nothing"
        );
    }

    #[test]
    fn endpoints_become_host_prefixes_with_port_and_protocol() {
        let p = from_graph(&graph());
        let rule = |net: &str, port, proto: &str| NetRule {
            net: net.parse().unwrap(),
            port_lo: port,
            port_hi: port,
            protocol: Some(proto.into()),
        };
        let mut want = vec![
            rule("127.0.0.1/32", 8080, "tcp"),
            rule("10.0.0.2/32", 53, "udp"),
            rule("2001:db8::1/128", 443, "tcp"),
            rule("127.0.0.1/32", 9, "tcp"),
        ];
        want.sort();
        assert_eq!(p.network, want, "a connect denied with EPERM is not learnt");
        assert_eq!(p.unix, ["/run/app.sock", "@jit-lock"]);
    }

    #[test]
    fn granted_capabilities_by_number_and_nothing_else() {
        let p = from_graph(&graph());
        assert_eq!(p.capabilities.into_iter().collect::<Vec<_>>(), [10, 41]);
        assert_eq!(p.ptrace, PtraceRule::None);
    }

    #[test]
    fn ptrace_within_the_workload_is_learnt_and_of_others_is_not() {
        let py = "/usr/bin/python3.11";
        let mut g = graph();
        assert_eq!(from_graph(&g).ptrace, PtraceRule::None);
        g.nodes.push(node(NodeKind::Workload, "host"));
        g.edges.push(edge(EdgeKind::Ptrace, py, "host", "read", "ok"));
        g.edges.push(edge(EdgeKind::Ptrace, py, "web", "read", "EPERM"));
        assert_eq!(from_graph(&g).ptrace, PtraceRule::None, "another workload, or refused");
        g.edges.push(edge(EdgeKind::Ptrace, py, "web", "read", "ok"));
        assert_eq!(from_graph(&g).ptrace, PtraceRule::SameWorkload);
    }

    #[test]
    fn an_empty_graph_allows_nothing() {
        let mut g = graph();
        g.nodes.clear();
        g.edges.clear();
        assert_eq!(from_graph(&g), Policy::default());
    }

    #[test]
    fn endpoint_labels() {
        assert!(endpoint("unix:").is_none());
        assert!(endpoint("nonsense").is_none());
        assert!(endpoint("1.2.3.4:99999/tcp").is_none());
        let Some(Endpoint::Inet(r)) = endpoint("[::1]:53/proto132") else { panic!() };
        assert_eq!(
            (r.net.to_string().as_str(), r.port_lo, r.protocol.as_deref()),
            ("::1/128", 53, Some("proto132"))
        );
        assert_eq!(capability_number("CAP_NET_RAW"), Some(13));
        assert_eq!(capability_number("NET_RAW"), None);
    }
}
