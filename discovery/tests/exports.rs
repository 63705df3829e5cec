//! Exports of realistic policies (a web server, a cache, a host) validated against the real
//! schemas — the KubeArmor CRDs and Cilium's JSON Schema from ../shared/schemas (STANCE_SCHEMAS
//! overrides), and kubernetes-validate for NetworkPolicy — and checked for content: the right
//! rules appear, and nothing the native policy does not allow.
//!
//! Needs no privileges. A missing schema or a missing kubernetes-validate fails the test
//! (`deploy/install-deps.sh` installs the tool).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::{json, Value};
use stance::{
    enforce::policy::{ExecRule, FileRule, NetRule, Policy, PtraceRule},
    export::{render, to_yaml, ExportFormat, ANNOTATION_NARROWER, ANNOTATION_WIDER},
    model::WorkloadKind,
    store::WorkloadInfo,
};

// ---- fixtures -----------------------------------------------------------------------------------

fn workload(name: &str, kind: WorkloadKind) -> WorkloadInfo {
    WorkloadInfo {
        name: name.into(),
        kind,
        runtime: None,
        container_id: None,
        unit: None,
        pod_uid: None,
        first_seen: "2026-11-29T10:00:00Z".into(),
        last_seen: "2026-11-29T11:00:00Z".into(),
    }
}

fn exec(path: &str, from: &[&str]) -> ExecRule {
    ExecRule {
        path: path.into(),
        dev: Some(2049),
        ino: Some(1234),
        from: from.iter().map(|s| s.to_string()).collect(),
    }
}

fn file(path: &str, kind: &str, read: bool, write: bool) -> FileRule {
    FileRule { path: path.into(), prefix: kind == "prefix", children: kind == "children", read, write }
}

fn net(cidr: &str, lo: u16, hi: u16, proto: &str) -> NetRule {
    NetRule { net: cidr.parse().unwrap(), port_lo: lo, port_hi: hi, protocol: Some(proto.into()) }
}

/// nginx started by a shell as `stance launch --workload web`: config and content read-only, logs
/// written one level deep, a pid file, a write-only upload spool, /proc/<pid>/stat, a database, a
/// loopback cache, DNS, an upstream port range, php-fpm over a unix socket.
fn web() -> (Policy, WorkloadInfo) {
    let policy = Policy {
        executables: vec![exec("/usr/sbin/nginx", &["/usr/bin/dash"]), exec("/usr/bin/dash", &[])],
        files: vec![
            file("/etc/nginx", "prefix", true, false),
            file("/usr/share/nginx/html", "prefix", true, false),
            file("/usr/lib/x86_64-linux-gnu", "prefix", true, false),
            file("/var/log/nginx", "children", true, true),
            file("/run/nginx.pid", "exact", true, true),
            file("/var/spool/nginx/upload", "exact", false, true),
            file("/proc/*/stat", "exact", true, false),
            file("/etc/ld.so.cache", "exact", true, false),
        ],
        network: vec![
            net("10.0.5.20/32", 5432, 5432, "tcp"),
            net("127.0.0.1/32", 6379, 6379, "tcp"),
            net("10.0.0.2/32", 53, 53, "udp"),
            net("10.0.8.0/24", 8000, 8100, "tcp"),
        ],
        unix: vec!["/run/php/php-fpm.sock".into()],
        capabilities: [6, 7, 10].into_iter().collect(),
        ptrace: PtraceRule::None,
    };
    (policy, workload("web", WorkloadKind::Launched))
}

/// redis-server in a docker container: a config file, its data directory read-write, no outbound
/// network at all and no capabilities (both must stay denied in every export).
fn cache() -> (Policy, WorkloadInfo) {
    let policy = Policy {
        executables: vec![exec("/usr/bin/redis-server", &[])],
        files: vec![
            file("/etc/redis/redis.conf", "exact", true, false),
            file("/var/lib/redis", "prefix", true, true),
            file("/usr/lib/x86_64-linux-gnu", "prefix", true, false),
        ],
        ..Policy::default()
    };
    let mut w = workload("docker:0123456789ab", WorkloadKind::Container);
    w.runtime = Some("docker".into());
    w.container_id = Some("0123456789ab".repeat(5) + "cdef");
    (policy, w)
}

/// The host: sshd starting bash, NTP, a few capabilities.
fn host() -> (Policy, WorkloadInfo) {
    let policy = Policy {
        executables: vec![exec("/usr/sbin/sshd", &[]), exec("/usr/bin/bash", &["/usr/sbin/sshd"])],
        files: vec![file("/etc/ssh", "prefix", true, false), file("/var/log/auth.log", "exact", true, true)],
        network: vec![net("192.0.2.10/32", 123, 123, "udp")],
        unix: vec![],
        capabilities: [21, 18].into_iter().collect(),
        ptrace: PtraceRule::None,
    };
    (policy, workload("host", WorkloadKind::Host))
}

// ---- schemas ------------------------------------------------------------------------------------

fn schemas_dir() -> PathBuf {
    match std::env::var_os("STANCE_SCHEMAS") {
        Some(dir) => PathBuf::from(dir),
        // The repo root is the manifest's parent; the schemas live beside the repo.
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/schemas"),
    }
}

fn read_schema_file(name: &str) -> String {
    let path = schemas_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("schema {} missing ({e}); set STANCE_SCHEMAS to the schema directory", path.display())
    })
}

/// The openAPIV3Schema of a CRD, closed: Kubernetes prunes fields a structural schema does not
/// declare, so an unknown field in an export is a field KubeArmor would never see — an error here.
fn crd_schema(name: &str) -> Value {
    let crd: Value = yaml_serde::from_str(&read_schema_file(name)).expect("CRD is YAML");
    let mut schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    assert!(schema.is_object(), "{name}: no openAPIV3Schema");
    close_objects(&mut schema);
    schema
}

fn close_objects(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let open = m.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
            if m.contains_key("properties") && !m.contains_key("additionalProperties") && !open {
                m.insert("additionalProperties".into(), json!(false));
            }
            m.values_mut().for_each(close_objects);
        }
        Value::Array(a) => a.iter_mut().for_each(close_objects),
        _ => {}
    }
}

fn cilium_schema() -> Value {
    serde_json::from_str(&read_schema_file("ciliumnetworkpolicy_v2.json")).expect("Cilium schema is JSON")
}

/// Validation errors of `doc` (empty: valid).
fn schema_errors(schema: &Value, doc: &Value) -> Vec<String> {
    let validator = jsonschema::validator_for(schema).expect("schema compiles");
    validator.iter_errors(doc).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

/// Renders, writes YAML, reads the YAML back (it must be the same document) and validates it.
fn export_valid(format: ExportFormat, policy: &Policy, w: &WorkloadInfo, schema: &Value) -> Value {
    let doc = render(format, policy, w).unwrap_or_else(|e| panic!("{format}: {e}"));
    let yaml = to_yaml(&doc).unwrap();
    let back: Value = yaml_serde::from_str(&yaml).unwrap();
    assert_eq!(back, doc, "{format}: YAML does not read back as the same document:\n{yaml}");
    let errors = schema_errors(schema, &back);
    assert!(errors.is_empty(), "{format} for {} invalid:\n{}\n{yaml}", w.name, errors.join("\n"));
    doc
}

// ---- helpers for content checks -----------------------------------------------------------------

fn arr<'a>(v: &'a Value, key: &str) -> Vec<&'a Value> {
    v[key].as_array().map(|a| a.iter().collect()).unwrap_or_default()
}

fn notes(doc: &Value, key: &str) -> Vec<String> {
    doc["metadata"]["annotations"][key]
        .as_str()
        .map(|s| s.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn set<T: Ord>(it: impl IntoIterator<Item = T>) -> BTreeSet<T> {
    it.into_iter().collect()
}

/// JSON values as a set, for comparing rule lists whose order does not matter (serde_json's maps
/// are sorted, so equal values print the same).
fn items(it: impl IntoIterator<Item = Value>) -> BTreeSet<String> {
    it.into_iter().map(|v| v.to_string()).collect()
}

// ---- KubeArmor ----------------------------------------------------------------------------------

#[test]
fn kubearmor_web_server_is_valid_and_exact() {
    let (policy, w) = web();
    let doc = export_valid(ExportFormat::Kubearmor, &policy, &w, &crd_schema("kubearmorpolicy-crd.yaml"));
    assert_eq!(doc["kind"], "KubeArmorPolicy");
    assert_eq!(doc["apiVersion"], "security.kubearmor.com/v1");
    let spec = &doc["spec"];
    assert_eq!(spec["action"], "Allow");
    assert_eq!(spec["selector"], json!({"matchLabels": {"stance.dev/workload": "web"}}));
    assert_eq!(doc["metadata"]["labels"]["stance.dev/kind"], "launched");

    // Processes: exactly the two executables; nginx only from dash.
    assert_eq!(
        items(arr(&spec["process"], "matchPaths").into_iter().cloned()),
        items([
            json!({"path": "/usr/sbin/nginx", "fromSource": [{"path": "/usr/bin/dash"}]}),
            json!({"path": "/usr/bin/dash"})
        ]),
    );
    assert!(
        spec["process"].get("matchDirectories").is_none() && spec["process"].get("matchPatterns").is_none()
    );

    // Files: recursive vs one-level directories, read-only only where the native rule is.
    let file = &spec["file"];
    assert_eq!(
        items(arr(file, "matchDirectories").into_iter().cloned()),
        items([
            json!({"dir": "/etc/nginx/", "recursive": true, "readOnly": true}),
            json!({"dir": "/usr/share/nginx/html/", "recursive": true, "readOnly": true}),
            json!({"dir": "/usr/lib/x86_64-linux-gnu/", "recursive": true, "readOnly": true}),
            json!({"dir": "/var/log/nginx/"}),
        ])
    );
    assert_eq!(
        items(arr(file, "matchPaths").into_iter().cloned()),
        items([
            json!({"path": "/run/nginx.pid"}),
            json!({"path": "/var/spool/nginx/upload"}),
            json!({"path": "/etc/ld.so.cache", "readOnly": true}),
        ])
    );
    assert_eq!(arr(file, "matchPatterns"), vec![&json!({"pattern": "/proc/[0-9]*/stat", "readOnly": true})]);

    // Network by protocol only; capabilities by name; nothing blocked wholesale.
    assert_eq!(spec["network"], json!({"matchProtocols": [{"protocol": "tcp"}, {"protocol": "udp"}]}));
    assert_eq!(
        items(arr(&spec["capabilities"], "matchCapabilities").into_iter().cloned()),
        items([
            json!({"capability": "setgid"}),
            json!({"capability": "setuid"}),
            json!({"capability": "net_bind_service"})
        ])
    );
    assert!(!serde_json::to_string(spec).unwrap().contains("Block"));

    // Every departure from the native policy is written down.
    let wider = notes(&doc, ANNOTATION_WIDER);
    for needle in [
        "/var/spool/nginx/upload: write-only",
        "[0-9]*",
        "tcp is allowed to every address",
        "pin device and inode",
        "ptrace",
    ] {
        assert!(wider.iter().any(|n| n.contains(needle)), "no wider note with {needle:?}: {wider:#?}");
    }
    let narrower = notes(&doc, ANNOTATION_NARROWER);
    assert!(narrower.iter().any(|n| n.contains("/run/php/php-fpm.sock")), "{narrower:#?}");
}

#[test]
fn kubearmor_cache_denies_network_and_capabilities_explicitly() {
    let (policy, w) = cache();
    let doc = export_valid(ExportFormat::Kubearmor, &policy, &w, &crd_schema("kubearmorpolicy-crd.yaml"));
    let spec = &doc["spec"];
    assert_eq!(spec["selector"]["matchLabels"], json!({"stance.dev/workload": "docker-0123456789ab"}));
    assert_eq!(doc["metadata"]["annotations"]["stance.dev/workload"], "docker:0123456789ab");
    assert_eq!(doc["metadata"]["annotations"]["stance.dev/container-id"], json!(w.container_id));
    assert_eq!(doc["metadata"]["labels"]["stance.dev/runtime"], "docker");
    // An empty native list denies its whole domain; KubeArmor needs explicit Block rules for that.
    let protos = arr(&spec["network"], "matchProtocols");
    assert!(protos.iter().all(|r| r["action"] == "Block"), "{protos:?}");
    assert!(
        set(protos.iter().map(|r| r["protocol"].as_str().unwrap())).is_superset(&set(["tcp", "udp", "icmp"]))
    );
    let caps = arr(&spec["capabilities"], "matchCapabilities");
    assert_eq!(caps.len(), 34);
    assert!(caps.iter().all(|r| r["action"] == "Block"));
    assert_eq!(
        items(arr(&spec["file"], "matchDirectories").into_iter().cloned()),
        items([
            json!({"dir": "/var/lib/redis/", "recursive": true}),
            json!({"dir": "/usr/lib/x86_64-linux-gnu/", "recursive": true, "readOnly": true}),
        ])
    );
    assert_eq!(
        arr(&spec["file"], "matchPaths"),
        vec![&json!({"path": "/etc/redis/redis.conf", "readOnly": true})]
    );
}

#[test]
fn kubearmor_host_policy_selects_the_node_and_names_sources() {
    let (policy, w) = host();
    let doc =
        export_valid(ExportFormat::KubearmorHost, &policy, &w, &crd_schema("kubearmorhostpolicy-crd.yaml"));
    assert_eq!(doc["kind"], "KubeArmorHostPolicy");
    let spec = &doc["spec"];
    assert_eq!(spec["nodeSelector"], json!({"matchLabels": {"stance.dev/workload": "host"}}));
    assert!(spec.get("selector").is_none());
    let sources = json!([{"path": "/usr/bin/bash"}, {"path": "/usr/sbin/sshd"}]);
    assert_eq!(spec["network"]["matchProtocols"], json!([{"protocol": "udp", "fromSource": sources}]));
    assert_eq!(
        items(arr(&spec["capabilities"], "matchCapabilities").into_iter().cloned()),
        items([
            json!({"capability": "sys_admin", "fromSource": sources}),
            json!({"capability": "sys_chroot", "fromSource": sources})
        ])
    );
    assert!(arr(&spec["process"], "matchPaths")
        .contains(&&json!({"path": "/usr/bin/bash", "fromSource": [{"path": "/usr/sbin/sshd"}]})));
}

#[test]
fn kubearmor_formats_refuse_workloads_they_cannot_select() {
    let (policy, w) = host();
    let e = render(ExportFormat::Kubearmor, &policy, &w).unwrap_err().to_string();
    assert!(e.contains("kubearmor cannot select workload 'host'") && e.contains("kubearmor-host"), "{e}");
    let (policy, w) = web();
    let e = render(ExportFormat::KubearmorHost, &policy, &w).unwrap_err().to_string();
    assert!(e.contains("kubearmor-host cannot select workload 'web' (a launched workload)"), "{e}");
    assert!(!e.contains('\n'));
}

#[test]
fn closed_crd_schema_rejects_what_kubearmor_would_not_take() {
    // Guards the validation itself: a wrong type, a path KubeArmor rejects, and a misspelt field
    // (which the API server would prune) must all fail.
    let schema = crd_schema("kubearmorpolicy-crd.yaml");
    let (policy, w) = web();
    let good = render(ExportFormat::Kubearmor, &policy, &w).unwrap();
    assert!(schema_errors(&schema, &good).is_empty());
    for (pointer, bad) in [
        ("/spec/file/matchDirectories/0/readOnly", json!("yes")),
        ("/spec/file/matchPaths/0/path", json!("/etc/nginx/")),
        ("/spec/action", json!("Permit")),
    ] {
        let mut doc = good.clone();
        *doc.pointer_mut(pointer).unwrap_or_else(|| panic!("{pointer} missing")) = bad;
        assert!(!schema_errors(&schema, &doc).is_empty(), "{pointer} not rejected");
    }
    let mut doc = good.clone();
    doc["spec"]["file"]["matchPath"] = json!([{"path": "/etc/passwd"}]);
    assert!(!schema_errors(&schema, &doc).is_empty(), "unknown field not rejected");
}

// ---- Cilium -------------------------------------------------------------------------------------

#[test]
fn cilium_web_server_is_valid_and_exact() {
    let (policy, w) = web();
    let doc = export_valid(ExportFormat::Cilium, &policy, &w, &cilium_schema());
    assert_eq!(doc["apiVersion"], "cilium.io/v2");
    assert_eq!(doc["kind"], "CiliumNetworkPolicy");
    let spec = &doc["spec"];
    assert_eq!(spec["endpointSelector"], json!({"matchLabels": {"stance.dev/workload": "web"}}));
    assert_eq!(spec["enableDefaultDeny"]["egress"], true);
    assert!(spec.get("ingress").is_none());
    let expected = items([
        json!({"toCIDR": ["10.0.0.2/32"], "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}]}]}),
        json!({"toCIDR": ["10.0.5.20/32"], "toPorts": [{"ports": [{"port": "5432", "protocol": "TCP"}]}]}),
        json!({"toCIDR": ["10.0.8.0/24"], "toPorts": [{"ports": [{"port": "8000", "endPort": 8100, "protocol": "TCP"}]}]}),
        json!({
            "toEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system", "k8s:k8s-app": "kube-dns"}}],
            "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}]}],
        }),
    ]);
    assert_eq!(items(arr(spec, "egress").into_iter().cloned()), expected);
    let wider = notes(&doc, ANNOTATION_WIDER);
    assert!(
        wider.iter().any(|n| n.contains("127.0.0.1/32 port 6379/tcp") && n.contains("loopback")),
        "{wider:#?}"
    );
    assert!(wider.iter().any(|n| n.contains("kube-dns")), "{wider:#?}");
}

#[test]
fn cilium_cache_denies_all_egress() {
    let (policy, w) = cache();
    let doc = export_valid(ExportFormat::Cilium, &policy, &w, &cilium_schema());
    assert_eq!(doc["spec"]["egress"], json!([]));
    assert_eq!(doc["spec"]["enableDefaultDeny"], json!({"egress": true, "ingress": false}));
    assert_eq!(doc["spec"]["endpointSelector"]["matchLabels"]["stance.dev/workload"], "docker-0123456789ab");
}

#[test]
fn cilium_splits_many_ports_and_keeps_every_port() {
    let (mut policy, w) = web();
    policy.network = (0..45).map(|i| net("10.9.9.9/32", 7000 + i, 7000 + i, "tcp")).collect();
    policy.network.push(net("2001:db8::/64", 0, 65535, "udp"));
    let doc = export_valid(ExportFormat::Cilium, &policy, &w, &cilium_schema());
    let egress = arr(&doc["spec"], "egress");
    let v4 = egress.iter().find(|r| r["toCIDR"] == json!(["10.9.9.9/32"])).unwrap();
    let chunks = arr(v4, "toPorts");
    assert_eq!(chunks.len(), 2);
    let ports: BTreeSet<u16> = chunks
        .iter()
        .flat_map(|c| arr(c, "ports"))
        .map(|p| p["port"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ports, (7000..7045).collect());
    let v6 = egress.iter().find(|r| r["toCIDR"] == json!(["2001:db8::/64"])).unwrap();
    assert_eq!(v6["toPorts"], json!([{"ports": [{"port": "1", "endPort": 65535, "protocol": "UDP"}]}]));
}

#[test]
fn network_formats_refuse_the_host() {
    let (policy, w) = host();
    for f in [ExportFormat::Cilium, ExportFormat::NetworkPolicy] {
        let e = render(f, &policy, &w).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{f} cannot select workload 'host'")), "{e}");
    }
}

// ---- NetworkPolicy ------------------------------------------------------------------------------

/// kubernetes-validate, from KUBERNETES_VALIDATE, the venv deploy/install-deps.sh makes, or PATH.
fn kubernetes_validate() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBERNETES_VALIDATE") {
        return p.into();
    }
    let venv = Path::new("/opt/stance/venv/bin/kubernetes-validate");
    if venv.exists() {
        return venv.into();
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("kubernetes-validate"))
        .find(|p| p.exists());
    found.expect("kubernetes-validate not found (run deploy/install-deps.sh, or set KUBERNETES_VALIDATE)")
}

/// Runs kubernetes-validate --strict on `yaml`; Ok(output) when it accepts the document.
fn kubernetes_validate_yaml(yaml: &str) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(kubernetes_validate())
        .arg("--strict")
        .arg(&path)
        .output()
        .expect("kubernetes-validate runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

#[test]
fn networkpolicy_web_server_is_valid_and_exact() {
    let (policy, w) = web();
    let doc = render(ExportFormat::NetworkPolicy, &policy, &w).unwrap();
    let yaml = to_yaml(&doc).unwrap();
    if let Err(out) = kubernetes_validate_yaml(&yaml) {
        panic!("kubernetes-validate rejected the NetworkPolicy:\n{out}\n{yaml}");
    }
    assert_eq!(doc["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(doc["kind"], "NetworkPolicy");
    let spec = &doc["spec"];
    assert_eq!(spec["podSelector"], json!({"matchLabels": {"stance.dev/workload": "web"}}));
    assert_eq!(spec["policyTypes"], json!(["Egress"]));
    let expected = items([
        json!({"to": [{"ipBlock": {"cidr": "10.0.0.2/32"}}], "ports": [{"protocol": "UDP", "port": 53}]}),
        json!({"to": [{"ipBlock": {"cidr": "10.0.5.20/32"}}], "ports": [{"protocol": "TCP", "port": 5432}]}),
        json!({"to": [{"ipBlock": {"cidr": "10.0.8.0/24"}}], "ports": [{"protocol": "TCP", "port": 8000, "endPort": 8100}]}),
        json!({
            "to": [{
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }],
            "ports": [{"protocol": "UDP", "port": 53}],
        }),
    ]);
    assert_eq!(items(arr(spec, "egress").into_iter().cloned()), expected);
    // The loopback cache is gone from the rules but not from the record.
    assert!(!yaml.contains("127.0.0.1/32\n") && !yaml.contains("cidr: 127."));
    assert!(notes(&doc, ANNOTATION_WIDER).iter().any(|n| n.contains("127.0.0.1/32")));
}

#[test]
fn networkpolicy_cache_denies_all_egress_and_any_protocol_is_tcp_udp_sctp() {
    let (policy, w) = cache();
    let doc = render(ExportFormat::NetworkPolicy, &policy, &w).unwrap();
    kubernetes_validate_yaml(&to_yaml(&doc).unwrap()).unwrap();
    assert_eq!(doc["spec"]["egress"], json!([]));
    assert_eq!(doc["spec"]["policyTypes"], json!(["Egress"]));

    let (mut policy, w) = web();
    policy.network = vec![
        NetRule { net: "198.51.100.0/24".parse().unwrap(), port_lo: 443, port_hi: 443, protocol: None },
        net("203.0.113.5/32", 0, 0, "icmp"),
    ];
    let doc = render(ExportFormat::NetworkPolicy, &policy, &w).unwrap();
    kubernetes_validate_yaml(&to_yaml(&doc).unwrap()).unwrap();
    assert_eq!(
        doc["spec"]["egress"],
        json!([{"to": [{"ipBlock": {"cidr": "198.51.100.0/24"}}], "ports": [
            {"protocol": "TCP", "port": 443}, {"protocol": "UDP", "port": 443}, {"protocol": "SCTP", "port": 443}
        ]}])
    );
    let narrower = notes(&doc, ANNOTATION_NARROWER);
    assert!(narrower.iter().any(|n| n.contains("203.0.113.5/32") && n.contains("icmp")), "{narrower:#?}");
}

#[test]
fn kubernetes_validate_rejects_a_broken_networkpolicy() {
    // Guards the validator: if this passes, the checks above mean nothing.
    let (policy, w) = web();
    let mut doc = render(ExportFormat::NetworkPolicy, &policy, &w).unwrap();
    doc["spec"]["egress"][0]["ports"][0]["protocol"] = json!(6);
    assert!(kubernetes_validate_yaml(&to_yaml(&doc).unwrap()).is_err());
    let mut doc = render(ExportFormat::NetworkPolicy, &policy, &w).unwrap();
    doc["spec"]["egres"] = doc["spec"]["egress"].take();
    assert!(
        kubernetes_validate_yaml(&to_yaml(&doc).unwrap()).is_err(),
        "--strict must reject unknown fields"
    );
}
