//! Text forms of the store's answers: the `stance workloads` and `stance events` tables for people,
//! and Graphviz DOT for `stance graph -o dot`. Pure functions of the values, so they are tested
//! without a database.

use std::fmt::Write;

use super::{EnforcementEvent, Graph, GraphEdge, GraphNode, WorkloadSummary};
use crate::model::NodeKind;

/// The workload list as aligned columns, one workload per line, ending in a newline.
pub fn workloads_table(list: &[WorkloadSummary]) -> String {
    workloads_table_with(list, &[])
}

/// The workload list with more columns after the store's own: `(header, one cell per workload)`
/// (the recommender's readiness).
pub fn workloads_table_with(list: &[WorkloadSummary], extra: &[(&str, Vec<String>)]) -> String {
    if list.is_empty() {
        return "no workloads observed yet\n".to_owned();
    }
    const HEADER: [&str; 9] =
        ["NAME", "KIND", "EDGES", "EXECS", "FILES", "ENDPOINTS", "CAPS", "LOSSES", "LAST-SEEN"];
    // Counts read best right-aligned, so their digits line up.
    const NUMERIC: [bool; 9] = [false, false, true, true, true, true, true, true, false];
    let header: Vec<&str> = HEADER.iter().copied().chain(extra.iter().map(|(h, _)| *h)).collect();
    let numeric: Vec<bool> = NUMERIC.iter().copied().chain(extra.iter().map(|_| false)).collect();
    let rows = list.iter().enumerate().map(|(i, w)| {
        let mut row = vec![
            w.workload.name.clone(),
            w.workload.kind.as_str().to_owned(),
            w.edges.to_string(),
            w.executables.to_string(),
            w.files.to_string(),
            w.endpoints.to_string(),
            w.capabilities.to_string(),
            w.losses.total.to_string(),
            w.workload.last_seen.clone(),
        ];
        row.extend(extra.iter().map(|(_, cells)| cells.get(i).cloned().unwrap_or_default()));
        row
    });
    aligned(&header, &numeric, rows)
}

/// Enforcement events as aligned columns, newest first as given, the object last (it is the longest).
pub fn events_table(events: &[EnforcementEvent]) -> String {
    if events.is_empty() {
        return "no enforcement events\n".to_owned();
    }
    const HEADER: [&str; 7] = ["AT", "WORKLOAD", "DOMAIN", "KIND", "PID", "ACTOR", "OBJECT"];
    const NUMERIC: [bool; 7] = [false, false, false, false, true, false, false];
    let rows = events.iter().map(|e| {
        let mut object = e.object.clone();
        if e.send {
            object.push_str(" (send)");
        }
        if e.truncated {
            object.push_str(" (truncated)");
        }
        vec![
            e.at.clone(),
            e.workload.clone(),
            e.domain.as_str().to_owned(),
            e.kind.as_str().to_owned(),
            e.pid.to_string(),
            e.actor.clone(),
            object,
        ]
    });
    aligned(&HEADER, &NUMERIC, rows)
}

/// A header and rows as columns two spaces apart, numeric columns right-aligned, each line trimmed
/// and ending in a newline.
pub(crate) fn aligned(header: &[&str], numeric: &[bool], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header.iter().map(|h| (*h).to_owned()).collect::<Vec<String>>()).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = " ".repeat(widths[i] - cell.chars().count());
            if numeric[i] {
                line.push_str(&pad);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&pad);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The graph as a Graphviz `digraph`: one DOT node per graph node, shaped by kind, and one DOT edge per
/// graph edge, labelled `kind access (count)` (with the result when it is a failure).
pub fn graph_dot(graph: &Graph) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored for that reason only.
    let _ = writeln!(out, "digraph {} {{", quote(&format!("stance: {}", graph.workload.name)));
    let _ = writeln!(out, "  rankdir=LR;");
    let _ = writeln!(out, "  node [fontname=\"Helvetica\"];");
    let _ = writeln!(out, "  edge [fontname=\"Helvetica\", fontsize=10];");
    for node in &graph.nodes {
        let _ = writeln!(
            out,
            "  {} [shape={}{}, label={}];",
            node.id,
            shape(node.kind),
            node_style(node),
            quote(&node.label)
        );
    }
    for edge in &graph.edges {
        let _ = writeln!(
            out,
            "  {} -> {} [label={}{}];",
            edge.source,
            edge.target,
            quote(&edge_label(edge)),
            edge_style(edge)
        );
    }
    out.push_str("}\n");
    out
}

fn shape(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Workload => "doubleoctagon",
        NodeKind::Executable => "box",
        NodeKind::File => "note",
        NodeKind::Endpoint => "ellipse",
        NodeKind::Capability => "hexagon",
    }
}

/// Anonymous executables are what fileless malware uses: make them stand out.
fn node_style(node: &GraphNode) -> &'static str {
    if node.memfd == Some(true) {
        ", style=dashed, color=red"
    } else {
        ""
    }
}

fn edge_label(edge: &GraphEdge) -> String {
    let mut label = edge.kind.as_str().to_owned();
    if !edge.access.is_empty() {
        label.push(' ');
        label.push_str(&edge.access);
    }
    // Without the result, a granted and a denied capability check would carry the same label.
    if !is_success(&edge.result) {
        label.push(' ');
        label.push_str(&edge.result);
    }
    let _ = write!(label, " ({})", edge.count);
    label
}

fn edge_style(edge: &GraphEdge) -> &'static str {
    if is_success(&edge.result) {
        ""
    } else {
        ", style=dashed, color=red, fontcolor=red"
    }
}

fn is_success(result: &str) -> bool {
    matches!(result, "ok" | "granted")
}

/// A DOT quoted string that shows `s` literally. Backslashes are doubled because Graphviz gives them
/// meaning in labels (`\n`, `\N`, `\l`); control characters, which a hostile file name can contain,
/// are shown as Rust-style escapes instead of breaking the line.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                for e in c.escape_default() {
                    if e == '\\' {
                        out.push_str("\\\\");
                    } else {
                        out.push(e);
                    }
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod unit {
    use super::*;
    use crate::{
        model::{EdgeKind, WorkloadKind},
        store::{GraphLosses, LossSummary, WorkloadInfo},
    };

    fn info(name: &str) -> WorkloadInfo {
        WorkloadInfo {
            name: name.to_owned(),
            kind: WorkloadKind::Launched,
            runtime: None,
            container_id: None,
            unit: None,
            pod_uid: None,
            first_seen: "2024-01-01T00:00:00.000Z".to_owned(),
            last_seen: "2024-01-01T00:01:00.000Z".to_owned(),
        }
    }

    #[test]
    fn quoting_keeps_labels_literal() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quote("x\ny\u{7}"), r#""x\\ny\\u{7}""#);
        assert_eq!(quote("plain /etc/hostname"), "\"plain /etc/hostname\"");
    }

    #[test]
    fn empty_table_says_so() {
        assert_eq!(workloads_table(&[]), "no workloads observed yet\n");
    }

    #[test]
    fn table_columns_line_up() {
        let summary = |name: &str, edges| WorkloadSummary {
            workload: info(name),
            cgroups: 1,
            edges,
            executables: 2,
            files: 3,
            endpoints: 0,
            capabilities: 1,
            losses: LossSummary::default(),
        };
        let table = workloads_table(&[summary("a", 5), summary("a-much-longer-name", 12345)]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NAME                KIND      EDGES  EXECS"), "{table}");
        // Every column starts at the same offset on every line: LAST-SEEN is last.
        let at = lines[0].find("LAST-SEEN").unwrap();
        assert!(lines[1..].iter().all(|l| &l[at..] == "2024-01-01T00:01:00.000Z"), "{table}");
        // Counts are right-aligned under their header.
        let edges_end = lines[0].find("EDGES").unwrap() + "EDGES".len();
        assert_eq!(&lines[1][edges_end - 1..edges_end], "5");
        assert_eq!(&lines[2][edges_end - 5..edges_end], "12345");
    }

    #[test]
    fn events_table_puts_the_object_last_with_its_flags() {
        use crate::{enforce::Domain, store::VerdictKind};
        assert_eq!(events_table(&[]), "no enforcement events\n");
        let event = |object: &str, pid, truncated| EnforcementEvent {
            workload: "web".to_owned(),
            domain: Domain::File,
            kind: VerdictKind::WouldDeny,
            object: object.to_owned(),
            actor: "/usr/bin/cat".to_owned(),
            at: "2024-01-01T00:00:00.000Z".to_owned(),
            pid,
            tid: pid,
            cgroup_id: 1,
            truncated,
            send: false,
        };
        let table = events_table(&[event("/etc/shadow", 7, false), event("/a/b", 12345, true)]);
        assert_eq!(
            table,
            "AT                        WORKLOAD  DOMAIN  KIND          PID  ACTOR         OBJECT\n\
             2024-01-01T00:00:00.000Z  web       file    would-deny      7  /usr/bin/cat  /etc/shadow\n\
             2024-01-01T00:00:00.000Z  web       file    would-deny  12345  /usr/bin/cat  /a/b (truncated)\n"
        );
    }

    #[test]
    fn dot_labels_and_shapes() {
        let node = |id: &str, kind, label: &str| GraphNode {
            id: id.to_owned(),
            kind,
            label: label.to_owned(),
            dev: None,
            ino: None,
            memfd: None,
            argv: None,
            first_seen: String::new(),
            last_seen: String::new(),
        };
        let graph = Graph {
            workload: info("w\"1"),
            nodes: vec![
                node("n1", NodeKind::Executable, "/bin/sh"),
                node("n2", NodeKind::File, "/tmp/a\"b\\c"),
            ],
            edges: vec![GraphEdge {
                id: "e1".to_owned(),
                kind: EdgeKind::Open,
                source: "n1".to_owned(),
                target: "n2".to_owned(),
                source_label: "/bin/sh".to_owned(),
                target_label: "/tmp/a\"b\\c".to_owned(),
                actor: "/bin/sh".to_owned(),
                access: "read".to_owned(),
                result: "ENOENT".to_owned(),
                count: 3,
                first_seen: String::new(),
                last_seen: String::new(),
            }],
            losses: GraphLosses::default(),
        };
        let dot = graph_dot(&graph);
        assert!(dot.starts_with("digraph \"stance: w\\\"1\" {\n"), "{dot}");
        assert!(dot.contains("  n1 [shape=box, label=\"/bin/sh\"];\n"), "{dot}");
        assert!(dot.contains(r#"  n2 [shape=note, label="/tmp/a\"b\\c"];"#), "{dot}");
        assert!(dot.contains(r#"  n1 -> n2 [label="open read ENOENT (3)", style=dashed"#), "{dot}");
        assert!(dot.ends_with("}\n"));
    }
}
