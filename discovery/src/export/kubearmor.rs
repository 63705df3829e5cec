//! KubeArmorPolicy and KubeArmorHostPolicy (security.kubearmor.com/v1) as allow-lists: the policy's
//! `action: Allow` puts each domain that has rules into KubeArmor's whitelist mode, where what is
//! not listed falls to the default posture.
//!
//! KubeArmor leaves a domain without rules unrestricted, while an empty native list denies
//! everything in its domain. So a domain with nothing to allow gets explicit `action: Block` rules
//! covering the whole domain (`/` recursively, every protocol, every capability), never silence.
//!
//! KubeArmorHostPolicy requires `fromSource` on network and capability rules; the host workload's
//! executables are those sources, which is what the native rules mean (any executable of the
//! workload may use them).

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::{
    egress::describe, labels, metadata, refuse_host, unsupported, ExportError, ExportFormat, Notes, Result,
};
use crate::{
    enforce::policy::{FileRule, Policy, PtraceRule},
    model::WorkloadKind,
    store::WorkloadInfo,
};

/// What the policy selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// KubeArmorPolicy: pods (containers) by label.
    Pods,
    /// KubeArmorHostPolicy: nodes by label.
    Node,
}

/// KubeArmor's limit on `path` in matchPaths and fromSource.
const MAX_PATH: usize = 200;

/// The capabilities KubeArmor's CRDs accept (`capability` pattern), in kernel order.
const CAPABILITIES: [&str; 34] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
];

/// Protocols a Block-all network section lists (those a workload can open sockets for).
const BLOCK_PROTOCOLS: [&str; 6] = ["tcp", "udp", "icmp", "icmpv6", "sctp", "raw"];

pub(super) fn render(policy: &Policy, w: &WorkloadInfo, target: Target) -> Result<Value> {
    let (kind, selector_key) = match target {
        Target::Pods => {
            refuse_host(ExportFormat::Kubearmor, w)?;
            ("KubeArmorPolicy", "selector")
        }
        Target::Node => {
            if w.kind != WorkloadKind::Host {
                return Err(unsupported(
                    ExportFormat::KubearmorHost,
                    w,
                    "a host policy governs every process of the node, not one workload (use kubearmor)",
                ));
            }
            ("KubeArmorHostPolicy", "nodeSelector")
        }
    };
    // Host policies must name the sources of network and capability rules.
    let sources = match target {
        Target::Pods => None,
        Target::Node => {
            let s = source_list(policy.executables.iter().map(|e| e.path.as_str()));
            if s.is_empty() {
                return Err(ExportError::NoSource(w.name.clone()));
            }
            Some(Value::Array(s))
        }
    };
    let mut notes = Notes::default();
    let mut spec = Map::new();
    spec.insert(selector_key.into(), json!({"matchLabels": labels::selector(w)?}));
    spec.insert("action".into(), json!("Allow"));
    spec.insert("process".into(), process(policy, &mut notes));
    spec.insert("file".into(), file(policy, &mut notes));
    spec.insert("network".into(), network(policy, sources.as_ref(), &mut notes));
    spec.insert("capabilities".into(), capabilities(policy, sources.as_ref(), &mut notes));
    let native = match policy.ptrace {
        PtraceRule::None => "denied",
        PtraceRule::SameWorkload => "only within the workload",
    };
    notes.wider(format!("ptrace: KubeArmor has no ptrace rule, so it is not restricted (native: {native})"));
    Ok(json!({
        "apiVersion": "security.kubearmor.com/v1",
        "kind": kind,
        "metadata": metadata(w, &notes)?,
        "spec": spec,
    }))
}

fn process(policy: &Policy, notes: &mut Notes) -> Value {
    let mut paths = Vec::new();
    let mut patterns = Vec::new();
    for e in &policy.executables {
        if e.dev.is_some() && e.ino.is_some() {
            notes.wider(
                "process: executables are matched by path only; a binary replaced at an allowed path is allowed (native rules also pin device and inode)",
            );
        }
        if !e.path.starts_with('/') {
            notes.narrower(format!("process {}: an executable without a path cannot be matched", e.path));
            continue;
        }
        if has_wildcard(&e.path) {
            patterns.push(json!({"pattern": pattern(&e.path)}));
            notes.wider(format!(
                "process {}: becomes the pattern {}{}",
                e.path,
                pattern(&e.path),
                if e.from.is_empty() {
                    ""
                } else {
                    ", which cannot carry fromSource: any executable may start it"
                }
            ));
            continue;
        }
        if !fits_path(&e.path) {
            notes.narrower(format!("process {}: longer than KubeArmor's {MAX_PATH} characters", e.path));
            continue;
        }
        let mut rule = Map::new();
        rule.insert("path".into(), json!(e.path));
        let from = source_list(e.from.iter().map(String::as_str));
        if from.len() < e.from.len() {
            if from.is_empty() {
                notes.wider(format!(
                    "process {}: none of its parents can be named in fromSource, so any executable may start it",
                    e.path
                ));
            } else {
                notes.narrower(format!("process {}: some parents cannot be named in fromSource", e.path));
            }
        }
        if !from.is_empty() {
            rule.insert("fromSource".into(), Value::Array(from));
        }
        paths.push(Value::Object(rule));
    }
    let mut section = Map::new();
    if paths.is_empty() && patterns.is_empty() {
        insert_nonempty(&mut section, "matchDirectories", block_everything());
    }
    insert_nonempty(&mut section, "matchPaths", paths);
    insert_nonempty(&mut section, "matchPatterns", patterns);
    Value::Object(section)
}

fn file(policy: &Policy, notes: &mut Notes) -> Value {
    let (mut paths, mut dirs, mut patterns) = (Vec::new(), Vec::new(), Vec::new());
    for f in &policy.files {
        if !f.read && !f.write {
            continue; // admits nothing
        }
        let mut rule = Map::new();
        let list = if has_wildcard(&f.path) {
            let mut p = pattern(&f.path);
            if f.prefix || f.children {
                p = format!("{}/{}", p.trim_end_matches('/'), if f.prefix { "**" } else { "*" });
            }
            notes.wider(
                "file: a '*' component (an all-digit name such as a /proc pid) becomes the pattern [0-9]*, which also admits names that only start with a digit",
            );
            rule.insert("pattern".into(), json!(p));
            &mut patterns
        } else if f.prefix || f.children {
            let dir = if f.path == "/" { "/".to_owned() } else { format!("{}/", f.path) };
            rule.insert("dir".into(), json!(dir));
            if f.prefix {
                rule.insert("recursive".into(), json!(true));
            }
            &mut dirs
        } else if fits_path(&f.path) {
            rule.insert("path".into(), json!(f.path));
            &mut paths
        } else {
            notes.narrower(format!(
                "file {}: not a path KubeArmor can match (at most {MAX_PATH} characters, no trailing '/')",
                f.path
            ));
            continue;
        };
        if access(f, notes) {
            rule.insert("readOnly".into(), json!(true));
        }
        list.push(Value::Object(rule));
    }
    let mut section = Map::new();
    if paths.is_empty() && dirs.is_empty() && patterns.is_empty() {
        dirs = block_everything();
    }
    insert_nonempty(&mut section, "matchPaths", paths);
    insert_nonempty(&mut section, "matchDirectories", dirs);
    insert_nonempty(&mut section, "matchPatterns", patterns);
    Value::Object(section)
}

/// Whether the rule is read-only. KubeArmor's file rules admit read and write unless `readOnly`,
/// so a write-only rule can only become read+write.
fn access(f: &FileRule, notes: &mut Notes) -> bool {
    if f.write && !f.read {
        notes.wider(format!("file {}: write-only cannot be expressed, so it may also be read", rule_name(f)));
    }
    f.read && !f.write
}

/// `/var/log/nginx/**` for a recursive rule, `/etc/nginx/*` for one level, else the path.
fn rule_name(f: &FileRule) -> String {
    match (f.prefix, f.children) {
        (true, _) => format!("{}/**", f.path.trim_end_matches('/')),
        (false, true) => format!("{}/*", f.path.trim_end_matches('/')),
        _ => f.path.clone(),
    }
}

fn network(policy: &Policy, sources: Option<&Value>, notes: &mut Notes) -> Value {
    let mut protocols = BTreeSet::new();
    for r in &policy.network {
        match r.protocol.as_deref() {
            Some(p @ ("tcp" | "udp" | "icmp" | "icmpv6" | "sctp")) => {
                protocols.insert(p);
            }
            None | Some("" | "any") => {
                protocols.extend(["tcp", "udp"]);
                notes.narrower(format!(
                    "network {}: 'any protocol' becomes tcp and udp (KubeArmor names protocols one by one)",
                    describe(r)
                ));
            }
            Some(other) => {
                notes.narrower(format!("network {}: KubeArmor has no protocol {other}", describe(r)));
            }
        }
    }
    for p in &protocols {
        let n = policy.network.iter().filter(|r| r.protocol.as_deref().is_none_or(|q| q == *p)).count();
        notes.wider(format!(
            "network: KubeArmor matches protocols only, so {p} is allowed to every address and port (native: {n} destination rule(s))"
        ));
    }
    for u in &policy.unix {
        notes.narrower(format!(
            "network unix {u}: KubeArmor has no unix socket rule; whether the connect is allowed is up to its enforcer"
        ));
    }
    let rules: Vec<Value> = if protocols.is_empty() {
        BLOCK_PROTOCOLS
            .iter()
            .map(|p| with_source(json!({"protocol": p, "action": "Block"}), sources))
            .collect()
    } else {
        protocols.iter().map(|p| with_source(json!({"protocol": p}), sources)).collect()
    };
    json!({"matchProtocols": rules})
}

fn capabilities(policy: &Policy, sources: Option<&Value>, notes: &mut Notes) -> Value {
    let mut rules = Vec::new();
    for &n in &policy.capabilities {
        match capability_name(n) {
            Some(name) if CAPABILITIES.contains(&name.as_str()) => {
                rules.push(with_source(json!({"capability": name}), sources));
            }
            name => notes.narrower(format!(
                "capability {}: not in KubeArmor's capability list",
                name.unwrap_or_else(|| n.to_string())
            )),
        }
    }
    if rules.is_empty() {
        rules = CAPABILITIES
            .iter()
            .map(|c| with_source(json!({"capability": c, "action": "Block"}), sources))
            .collect();
    }
    json!({"matchCapabilities": rules})
}

/// `net_raw` for 13, as KubeArmor names capabilities.
fn capability_name(n: u32) -> Option<String> {
    caps::all()
        .into_iter()
        .find(|c| u32::from(c.index()) == n)
        .map(|c| c.to_string().trim_start_matches("CAP_").to_ascii_lowercase())
}

/// Adds `fromSource` (host policies) to a rule.
fn with_source(mut rule: Value, sources: Option<&Value>) -> Value {
    if let (Some(s), Some(obj)) = (sources, rule.as_object_mut()) {
        obj.insert("fromSource".into(), s.clone());
    }
    rule
}

/// A Block rule over every path: how a domain with nothing allowed still denies everything.
fn block_everything() -> Vec<Value> {
    vec![json!({"dir": "/", "recursive": true, "action": "Block"})]
}

/// fromSource entries for the paths KubeArmor can name (absolute, no pattern, not too long).
fn source_list<'a>(paths: impl Iterator<Item = &'a str>) -> Vec<Value> {
    let names: BTreeSet<&str> =
        paths.filter(|p| p.starts_with('/') && !has_wildcard(p) && fits_path(p)).collect();
    names.into_iter().map(|p| json!({"path": p})).collect()
}

/// A path KubeArmor's `path` fields accept: absolute, no trailing '/', at most 200 characters.
fn fits_path(p: &str) -> bool {
    p.starts_with('/') && !p.ends_with('/') && p.len() <= MAX_PATH
}

/// A native `*` component stands for an all-digit name (`/proc/*/stat`).
fn has_wildcard(p: &str) -> bool {
    p.split('/').any(|c| c == "*")
}

/// The KubeArmor (AppArmor-style) pattern of a path with `*` components: each becomes `[0-9]*`,
/// one name starting with a digit, the closest a glob comes to "all digits".
fn pattern(p: &str) -> String {
    p.split('/').map(|c| if c == "*" { "[0-9]*" } else { c }).collect::<Vec<_>>().join("/")
}

fn insert_nonempty(section: &mut Map<String, Value>, key: &str, v: Vec<Value>) {
    if !v.is_empty() {
        section.insert(key.into(), Value::Array(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::policy::{ExecRule, NetRule};

    fn workload() -> WorkloadInfo {
        WorkloadInfo {
            name: "odd".into(),
            kind: WorkloadKind::Launched,
            runtime: None,
            container_id: None,
            unit: None,
            pod_uid: None,
            first_seen: String::new(),
            last_seen: String::new(),
        }
    }

    fn exec(path: &str, from: &[&str]) -> ExecRule {
        ExecRule {
            path: path.into(),
            dev: None,
            ino: None,
            from: from.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn notes_of(doc: &Value, key: &str) -> String {
        doc["metadata"]["annotations"][key].as_str().unwrap_or_default().to_owned()
    }

    #[test]
    fn rules_kubearmor_cannot_hold_are_noted_never_dropped_silently() {
        let long = format!("/srv/{}", "d".repeat(200));
        let policy = Policy {
            executables: vec![
                exec("memfd:jit", &[]),
                exec("/usr/bin/worker", &["memfd:loader"]),
                exec("/usr/bin/helper", &["memfd:loader", "/usr/bin/worker"]),
                exec(&long, &[]),
            ],
            files: vec![
                FileRule {
                    path: "/proc/*/task".into(),
                    prefix: false,
                    children: true,
                    read: false,
                    write: true,
                },
                FileRule { path: long.clone(), prefix: false, children: false, read: true, write: false },
                FileRule {
                    path: "/nothing".into(),
                    prefix: false,
                    children: false,
                    read: false,
                    write: false,
                },
            ],
            network: vec![
                NetRule { net: "10.0.0.0/8".parse().unwrap(), port_lo: 1, port_hi: 9, protocol: None },
                NetRule {
                    net: "10.0.0.1/32".parse().unwrap(),
                    port_lo: 1,
                    port_hi: 1,
                    protocol: Some("udplite".into()),
                },
            ],
            unix: vec!["@bus".into()],
            capabilities: [38, 12].into_iter().collect(),
            ptrace: PtraceRule::SameWorkload,
        };
        let doc = render(&policy, &workload(), Target::Pods).unwrap();
        let spec = &doc["spec"];
        assert_eq!(
            spec["process"]["matchPaths"],
            json!([
                {"path": "/usr/bin/worker"},
                {"path": "/usr/bin/helper", "fromSource": [{"path": "/usr/bin/worker"}]},
            ])
        );
        assert_eq!(spec["file"], json!({"matchPatterns": [{"pattern": "/proc/[0-9]*/task/*"}]}));
        assert_eq!(spec["network"], json!({"matchProtocols": [{"protocol": "tcp"}, {"protocol": "udp"}]}));
        assert_eq!(spec["capabilities"], json!({"matchCapabilities": [{"capability": "net_admin"}]}));

        let wider = notes_of(&doc, crate::export::ANNOTATION_WIDER);
        for needle in [
            "/usr/bin/worker: none of its parents",
            "/proc/*/task/*: write-only",
            "[0-9]*",
            "tcp is allowed to every address and port (native: 1 destination rule(s))",
            "native: only within the workload",
        ] {
            assert!(wider.contains(needle), "no {needle:?} in\n{wider}");
        }
        let narrower = notes_of(&doc, crate::export::ANNOTATION_NARROWER);
        for needle in [
            "memfd:jit: an executable without a path",
            "/usr/bin/helper: some parents",
            &format!("process {long}: longer than"),
            &format!("file {long}: not a path"),
            "'any protocol' becomes tcp and udp",
            "no protocol udplite",
            "unix @bus",
            "capability perfmon: not in KubeArmor's capability list",
        ] {
            assert!(narrower.contains(needle), "no {needle:?} in\n{narrower}");
        }
    }

    #[test]
    fn host_policy_without_a_nameable_executable_is_refused() {
        let mut w = workload();
        w.kind = WorkloadKind::Host;
        let policy = Policy { executables: vec![exec("memfd:x", &[])], ..Policy::default() };
        let e = render(&policy, &w, Target::Node).unwrap_err().to_string();
        assert!(e.contains("need fromSource"), "{e}");
    }
}
