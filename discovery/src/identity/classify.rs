//! Cgroup path → workload identity: the naming rules users see (`stance graph NAME`).
//!
//! The path is read from the root inward. Containers and pods are recognised by the names their
//! runtimes and kubelet give cgroups, in both the systemd driver layout (`docker-<id>.scope`,
//! `kubepods-burstable-pod<uid>.slice`) and the cgroupfs one (`/docker/<id>`, `/kubepods/pod<uid>/<id>`).
//! The innermost container wins, so a container started inside another one is its own workload.
//! Anything not recognised belongs to the host: a wrong "host" is visible and harmless, while a wrong
//! specific name would put one workload's behaviour into another's policy.

use crate::{
    model::{Identity, WorkloadKind},
    paths::LAUNCH_CGROUP_DIR,
};

/// The workload a cgroup belongs to. `path` is relative to the cgroup2 root and starts with `/`;
/// anything else (empty, relative, with `.` or `..` components) is not a path the kernel reports, so
/// it is not trusted to name a workload and counts as host.
pub fn classify(path: &str) -> Identity {
    let Some(rest) = path.strip_prefix('/') else {
        return Identity::host();
    };
    let components: Vec<&str> = rest.split('/').filter(|c| !c.is_empty()).collect();
    if components.iter().any(|c| matches!(*c, "." | "..")) {
        return Identity::host();
    }
    classify_components(&components)
}

/// What one path component says about the workload.
#[derive(Debug, PartialEq, Eq)]
enum Component<'a> {
    /// A container's own cgroup; `pod` is set where the name also carries the pod (`slice:prefix:id`).
    Container {
        runtime: Option<&'static str>,
        id: &'a str,
        pod: Option<String>,
    },
    /// A bare 64-hex directory: a container in cgroupfs layouts, but only in a context that says so.
    BareId(&'a str),
    /// A Kubernetes pod's cgroup (uid normalised to dashes).
    Pod(String),
    /// `kubepods`, `kubepods.slice`, a QoS slice: where kubelet's tree starts.
    KubeRoot,
    /// `cgroupfs`-layout pod directory candidate (`pod<uid>`), a pod only under a kube root.
    PodDir(String),
    /// conmon, the runtime's per-container monitor: it belongs to the runtime, not the container.
    Conmon,
    /// A systemd service unit.
    Unit(&'a str),
    Other,
}

fn classify_components(components: &[&str]) -> Identity {
    if let [first, name, ..] = components {
        if *first == LAUNCH_CGROUP_DIR {
            return Identity { name: (*name).to_owned(), kind: WorkloadKind::Launched, ..Identity::host() };
        }
    }
    // systemd's user manager runs units too (user@1000.service and below); those are a person's
    // session, which policy treats as the host.
    let user_session = components.first() == Some(&"user.slice");

    let mut unit: Option<&str> = None;
    let mut pod: Option<String> = None;
    let mut container: Option<(Option<&'static str>, &str)> = None;
    // Index of the outermost kubelet component since the last container: conmon's owner is what
    // encloses kubelet's tree.
    let mut kube_root: Option<usize> = None;

    for (i, comp) in components.iter().enumerate() {
        match component(comp) {
            Component::Container { runtime, id, pod: named_pod } => {
                if named_pod.is_some() {
                    pod = named_pod;
                }
                container = Some((runtime, id));
                kube_root = None;
            }
            Component::BareId(id) => {
                let runtime = match i.checked_sub(1).map(|p| components[p]) {
                    Some("docker") => Some(Some("docker")),
                    // Kubelet's cgroupfs driver: the container's directory sits right in the pod's.
                    _ if pod.is_some() && container.is_none() => Some(None),
                    _ => None,
                };
                if let Some(runtime) = runtime {
                    container = Some((runtime, id));
                    kube_root = None;
                }
            }
            Component::Pod(uid) => {
                pod = Some(uid);
                container = None;
                kube_root.get_or_insert(i);
            }
            Component::PodDir(uid) if kube_root.is_some() => {
                pod = Some(uid);
                container = None;
            }
            Component::KubeRoot => {
                kube_root.get_or_insert(i);
            }
            Component::Conmon => {
                return classify_components(&components[..kube_root.unwrap_or(i)]);
            }
            // Sub-cgroups of a unit belong to it, so the outermost unit counts.
            Component::Unit(name) if unit.is_none() && !user_session => unit = Some(name),
            Component::PodDir(_) | Component::Unit(_) | Component::Other => {}
        }
    }

    if let Some((runtime, id)) = container {
        let short = &id[..12];
        return Identity {
            name: format!("{}:{short}", runtime.unwrap_or("container")),
            kind: WorkloadKind::Container,
            runtime: runtime.map(str::to_owned),
            container_id: Some(id.to_owned()),
            pod_uid: pod,
            ..Identity::host()
        };
    }
    if let Some(uid) = pod {
        return Identity {
            name: format!("pod:{uid}"),
            kind: WorkloadKind::Container,
            pod_uid: Some(uid),
            ..Identity::host()
        };
    }
    if let Some(unit) = unit {
        return Identity {
            name: unit.to_owned(),
            kind: WorkloadKind::Systemd,
            unit: Some(unit.to_owned()),
            ..Identity::host()
        };
    }
    Identity::host()
}

/// Scope prefixes of container runtimes using the systemd cgroup driver, with the runtime they name.
/// Conmon prefixes come first so that `crio-conmon-` is not read as a `crio-` container.
const SCOPES: [(&str, Option<&str>); 6] = [
    ("crio-conmon-", None),
    ("libpod-conmon-", None),
    ("docker-", Some("docker")),
    ("cri-containerd-", Some("containerd")),
    ("crio-", Some("crio")),
    ("libpod-", Some("podman")),
];

fn component(comp: &str) -> Component<'_> {
    if let Some(stem) = comp.strip_suffix(".scope") {
        for (prefix, runtime) in SCOPES {
            if let Some(id) = stem.strip_prefix(prefix) {
                return match runtime {
                    None => Component::Conmon,
                    Some(_) if is_container_id(id) => Component::Container { runtime, id, pod: None },
                    Some(_) => Component::Other,
                };
            }
        }
        return Component::Other;
    }
    if let Some(stem) = comp.strip_suffix(".slice") {
        return match slice_pod_uid(stem) {
            Some(uid) => Component::Pod(uid),
            None if stem.split('-').any(|part| part == "kubepods") => Component::KubeRoot,
            None => Component::Other,
        };
    }
    // containerd run with the cgroupfs driver while kubelet asks for systemd-style names leaves the
    // systemd "slice:prefix:id" spec as a literal directory name under containerd.service.
    if let Some((slice, rest)) = comp.split_once(".slice:") {
        if let Some((prefix, id)) = rest.split_once(':') {
            let runtime = match prefix {
                "cri-containerd" => Some("containerd"),
                "crio" => Some("crio"),
                "docker" => Some("docker"),
                _ => None,
            };
            if runtime.is_some() && is_container_id(id) {
                return Component::Container { runtime, id, pod: slice_pod_uid(slice) };
            }
        }
        return Component::Other;
    }
    if comp == "kubepods" {
        return Component::KubeRoot;
    }
    if is_container_id(comp) {
        return Component::BareId(comp);
    }
    if let Some(uid) = comp.strip_prefix("pod").and_then(pod_uid) {
        return Component::PodDir(uid);
    }
    match comp.strip_suffix(".service") {
        Some(stem) if !stem.is_empty() => Component::Unit(comp),
        _ => Component::Other,
    }
}

/// The pod uid of a kubelet pod slice stem (`kubepods-burstable-pod<uid>`, `kubepods-pod<uid>`,
/// `kubelet-kubepods-besteffort-pod<uid>`). systemd reserves `-` for nesting, so the uid has `_`.
fn slice_pod_uid(stem: &str) -> Option<String> {
    let (parents, last) = stem.rsplit_once('-')?;
    if !parents.split('-').any(|part| part == "kubepods") {
        return None;
    }
    pod_uid(last.strip_prefix("pod")?)
}

/// A pod uid (a UUID, or the 32-hex hash of a static pod) with `_` normalised to `-`.
fn pod_uid(raw: &str) -> Option<String> {
    let valid = !raw.is_empty()
        && raw.len() <= 64
        && raw.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_');
    valid.then(|| raw.replace('_', "-"))
}

/// Container ids of docker, containerd (CRI), cri-o and podman: 64 lowercase hex digits.
fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1c2a9d8b7e6f5a4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a2918f7e6d5c";
    const ID2: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "5d8c2f4e-1a2b-4c3d-9e8f-7a6b5c4d3e2f";
    const UID_: &str = "5d8c2f4e_1a2b_4c3d_9e8f_7a6b5c4d3e2f";

    /// What a path should classify as, in the fields that matter.
    struct Want {
        name: String,
        kind: WorkloadKind,
        runtime: Option<&'static str>,
        container_id: Option<&'static str>,
        unit: Option<&'static str>,
        pod_uid: Option<&'static str>,
    }

    fn host() -> Want {
        Want {
            name: "host".into(),
            kind: WorkloadKind::Host,
            runtime: None,
            container_id: None,
            unit: None,
            pod_uid: None,
        }
    }
    fn launched(name: &str) -> Want {
        Want { name: name.into(), kind: WorkloadKind::Launched, ..host() }
    }
    fn unit(name: &'static str) -> Want {
        Want { name: name.into(), kind: WorkloadKind::Systemd, unit: Some(name), ..host() }
    }
    fn container(runtime: Option<&'static str>, id: &'static str, pod: Option<&'static str>) -> Want {
        Want {
            name: format!("{}:{}", runtime.unwrap_or("container"), &id[..12]),
            kind: WorkloadKind::Container,
            runtime,
            container_id: Some(id),
            pod_uid: pod,
            ..host()
        }
    }
    fn pod(uid: &'static str) -> Want {
        Want { name: format!("pod:{uid}"), kind: WorkloadKind::Container, pod_uid: Some(uid), ..host() }
    }

    fn check(path: &str, want: Want) {
        let got = classify(path);
        let want = Identity {
            name: want.name,
            kind: want.kind,
            runtime: want.runtime.map(str::to_owned),
            container_id: want.container_id.map(str::to_owned),
            unit: want.unit.map(str::to_owned),
            pod_uid: want.pod_uid.map(str::to_owned),
        };
        assert_eq!(got, want, "classify({path:?})");
    }

    #[test]
    fn launched_workloads() {
        check("/stance/web", launched("web"));
        check("/stance/web/worker-1", launched("web"));
        check("/stance/my.app_v2-x/", launched("my.app_v2-x"));
        check("/stance", host());
        check("/stance/", host());
        // Only at the root: a directory called stance elsewhere is not ours.
        check("/system.slice/stance/web", host());
    }

    #[test]
    fn docker() {
        check(&format!("/system.slice/docker-{ID}.scope"), container(Some("docker"), ID, None));
        check(&format!("/system.slice/docker-{ID}.scope/init.scope"), container(Some("docker"), ID, None));
        check(&format!("/docker/{ID}"), container(Some("docker"), ID, None));
        check(&format!("/docker/{ID}/"), container(Some("docker"), ID, None));
        // The daemon itself is a unit, not a container.
        check("/system.slice/docker.service", unit("docker.service"));
        check("/docker", host());
        check("/system.slice/docker-notanid.scope", host());
        check(&format!("/system.slice/docker-{}.scope", ID.to_uppercase()), host());
    }

    #[test]
    fn containerd_and_crio_and_podman() {
        check("/system.slice/containerd.service", unit("containerd.service"));
        check("/system.slice/containerd.service/shim", unit("containerd.service"));
        check(
            &format!("/system.slice/containerd.service/cri-containerd-{ID}.scope"),
            container(Some("containerd"), ID, None),
        );
        check(&format!("/system.slice/crio-{ID}.scope"), container(Some("crio"), ID, None));
        check(&format!("/system.slice/crio-conmon-{ID}.scope"), host());
        check(&format!("/machine.slice/libpod-{ID}.scope/container"), container(Some("podman"), ID, None));
        check(&format!("/machine.slice/libpod-conmon-{ID}.scope"), host());
        // Rootless podman under a user's manager is still a container.
        check(
            &format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"),
            container(Some("podman"), ID, None),
        );
    }

    #[test]
    fn kubepods_systemd_driver() {
        let burstable =
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
        check(
            &format!("{burstable}/cri-containerd-{ID}.scope"),
            container(Some("containerd"), ID, Some(UID)),
        );
        check(&format!("{burstable}/crio-{ID}.scope"), container(Some("crio"), ID, Some(UID)));
        check(&format!("{burstable}/docker-{ID}.scope"), container(Some("docker"), ID, Some(UID)));
        check(&burstable, pod(UID));
        // conmon sits in the pod slice but is the runtime's, not the pod's.
        check(&format!("{burstable}/crio-conmon-{ID}.scope"), host());
        let besteffort =
            format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice");
        check(
            &format!("{besteffort}/cri-containerd-{ID}.scope"),
            container(Some("containerd"), ID, Some(UID)),
        );
        // Guaranteed pods sit directly under kubepods.slice.
        let guaranteed = format!("/kubepods.slice/kubepods-pod{UID_}.slice");
        check(
            &format!("{guaranteed}/cri-containerd-{ID}.scope"),
            container(Some("containerd"), ID, Some(UID)),
        );
        check(&guaranteed, pod(UID));
        check("/kubepods.slice", host());
        check("/kubepods.slice/kubepods-burstable.slice", host());
    }

    #[test]
    fn kubepods_cgroupfs_driver() {
        check(&format!("/kubepods/burstable/pod{UID}/{ID}"), container(None, ID, Some(UID)));
        check(&format!("/kubepods/besteffort/pod{UID}/{ID}"), container(None, ID, Some(UID)));
        check(&format!("/kubepods/pod{UID}/{ID}"), container(None, ID, Some(UID)));
        check(&format!("/kubepods/besteffort/pod{UID}"), pod(UID));
        check("/kubepods/burstable", host());
        // A pod<hex> directory outside kubelet's tree is not a pod.
        check("/system.slice/podabc", host());
        // A bare id outside a pod or /docker says nothing about a runtime.
        check(&format!("/system.slice/{ID}"), host());
        // A static pod's uid is a 32-hex hash.
        check(
            &format!("/kubepods/pod0123456789abcdef0123456789abcdef/{ID}"),
            container(None, ID, Some("0123456789abcdef0123456789abcdef")),
        );
    }

    #[test]
    fn containerd_with_mismatched_driver() {
        check(
            &format!(
                "/system.slice/containerd.service/kubepods-burstable-pod{UID_}.slice:cri-containerd:{ID}"
            ),
            container(Some("containerd"), ID, Some(UID)),
        );
        check("/system.slice/containerd.service/x.slice:other:y", unit("containerd.service"));
    }

    #[test]
    fn nested_containers_take_the_innermost() {
        check(&format!("/docker/{ID}/docker/{ID2}"), container(Some("docker"), ID2, None));
        check(&format!("/system.slice/docker-{ID}.scope/docker/{ID2}"), container(Some("docker"), ID2, None));
        // A kind node: a docker container running kubelet with the systemd driver.
        let node = format!("/system.slice/docker-{ID}.scope");
        let pod_slice = format!(
            "{node}/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice"
        );
        check(
            &format!("{pod_slice}/cri-containerd-{ID2}.scope"),
            container(Some("containerd"), ID2, Some(UID)),
        );
        check(&pod_slice, pod(UID));
        check(&format!("{node}/kubelet.slice"), container(Some("docker"), ID, None));
        // conmon in the node belongs to the node container.
        check(&format!("{pod_slice}/crio-conmon-{ID2}.scope"), container(Some("docker"), ID, None));
        // systemd inside a container: the container, not the unit.
        check(&format!("{node}/system.slice/nginx.service"), container(Some("docker"), ID, None));
    }

    #[test]
    fn systemd_units() {
        check("/system.slice/nginx.service", unit("nginx.service"));
        check("/system.slice/nginx.service/", unit("nginx.service"));
        check("/system.slice/foo.service/bar", unit("foo.service"));
        check("/system.slice/system-getty.slice/getty@tty1.service", unit("getty@tty1.service"));
        check(
            "/system.slice/system-postgresql.slice/postgresql@15-main.service",
            unit("postgresql@15-main.service"),
        );
        check("/init.scope", host());
        check("/system.slice", host());
        check("/user.slice/user-1000.slice/session-1.scope", host());
        check("/user.slice/user-1000.slice/user@1000.service/app.slice/dbus.service", host());
        check("/system.slice/.service", host());
    }

    #[test]
    fn garbage_is_host() {
        for path in
            ["", "/", "//", "?", "..", "/..", "/../system.slice/nginx.service", "/stance/..", "/stance/./x"]
        {
            check(path, host());
        }
        check("system.slice/nginx.service", host());
        check("//system.slice//nginx.service", unit("nginx.service"));
    }
}
