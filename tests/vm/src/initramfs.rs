//! Builds the guest's whole userland as one initramfs: static busybox and its applet links, the
//! `--bin` files at their host paths (plus, with `--lib-from-ldd`, the shared libraries `ldd` lists,
//! dynamic loader included), the scenarios under `/scenarios`, and a generated `/init`.
//!
//! Carrying everything in the initramfs means the cloud kernels need no modules (they have no 9p
//! and their virtio drivers are modules).

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{cmd, markers, Error, Result};

/// Where busybox-static installs its binary.
const BUSYBOX: &str = "/bin/busybox";
/// Where the scenarios directory lands inside the guest.
const GUEST_SCENARIOS: &str = "/scenarios";

/// A `*.sh` file in the scenarios directory; its name is the file stem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    pub name: String,
    /// Its own timeout, from a `# vmtest-timeout: SECS` line near the top of the script, for a
    /// scenario that needs longer than the default.
    pub timeout_secs: Option<u64>,
}

/// The header line by which a scenario asks for a longer timeout.
const TIMEOUT_HEADER: &str = "# vmtest-timeout:";
/// How many lines from the top the header may be.
const HEADER_LINES: usize = 30;

impl Scenario {
    /// Seconds it may run: its own timeout, or `default` where that is longer (a scenario can
    /// only raise the limit, so `--scenario-timeout` still lengthens every one).
    pub fn timeout(&self, default: u64) -> u64 {
        self.timeout_secs.map_or(default, |own| own.max(default))
    }
}

/// The `# vmtest-timeout: SECS` of a script, if it has one.
fn timeout_header(path: &Path, text: &str) -> Result<Option<u64>> {
    let Some(line) = text.lines().take(HEADER_LINES).find(|l| l.starts_with(TIMEOUT_HEADER)) else {
        return Ok(None);
    };
    let value = line[TIMEOUT_HEADER.len()..].trim();
    match value.parse::<u64>() {
        Ok(secs) if secs > 0 => Ok(Some(secs)),
        _ => Err(Error::BadTimeoutHeader { path: path.to_owned(), value: value.to_owned() }),
    }
}

/// What goes into the image.
#[derive(Debug)]
pub struct Spec<'a> {
    pub bins: &'a [PathBuf],
    /// `--file` copies: host file, guest path.
    pub files: &'a [GuestFile],
    pub copy_libraries: bool,
    pub scenario_dir: &'a Path,
    pub scenarios: &'a [Scenario],
    pub scenario_timeout_secs: u64,
    /// Variables `/init` exports to every scenario (`--env KEY=VALUE`), e.g. a benchmark's size.
    pub env: &'a [(String, String)],
}

/// The `*.sh` files directly in `dir`, sorted by name, keeping those whose name contains `filter`.
pub fn discover(dir: &Path, filter: Option<&str>) -> Result<Vec<Scenario>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let path = entry.map_err(Error::io(dir))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".sh")) else {
            continue;
        };
        if !path.is_file() || filter.is_some_and(|f| !name.contains(f)) {
            continue;
        }
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            return Err(Error::BadScenarioName { name: name.to_owned() });
        }
        let text = std::fs::read_to_string(&path).map_err(Error::io(&path))?;
        names.push((name.to_owned(), timeout_header(&path, &text)?));
    }
    if names.is_empty() {
        return Err(match filter {
            Some(f) => Error::FilterMatchesNothing { dir: dir.to_owned(), filter: f.to_owned() },
            None => Error::NoScenarios { dir: dir.to_owned() },
        });
    }
    names.sort();
    Ok(names.into_iter().map(|(name, timeout_secs)| Scenario { name, timeout_secs }).collect())
}

/// Builds the image in `work` (a directory the caller owns and cleans up) and returns the path of
/// the gzip-compressed cpio archive.
pub fn build(spec: &Spec<'_>, work: &Path) -> Result<PathBuf> {
    let root = &work.join("root");
    for dir in ["dev", "proc", "sys", "tmp", "run", "etc", "root"] {
        mkdir(&root.join(dir))?;
    }

    install_file(root, Path::new(BUSYBOX), true)?;
    let applets = cmd::checked(Command::new(BUSYBOX).arg("--list-full"))?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines().filter(|l| !l.is_empty()) {
        let link = root.join(applet);
        if !link.exists() {
            mkdir(link.parent().unwrap_or(root))?;
            std::os::unix::fs::symlink(BUSYBOX, &link).map_err(Error::io(&link))?;
        }
    }

    // `--bin` files go in after the applet links so that they win over a same-named applet. They
    // live in one fixed guest directory, not at their host path: a checkout under /tmp or /run
    // would otherwise be hidden by the tmpfs /init mounts there.
    let bin_dirs = vec![PathBuf::from(GUEST_BIN_DIR)];
    for bin in spec.bins {
        let bin = std::path::absolute(bin).map_err(Error::io(bin))?;
        install_bin(root, &bin, spec.copy_libraries)?;
    }
    for file in spec.files {
        install_guest_file(root, file, spec.copy_libraries)?;
    }

    copy_tree(spec.scenario_dir, &root.join(GUEST_SCENARIOS.trim_start_matches('/')))?;
    let init = root.join("init");
    std::fs::write(&init, init_script(spec.scenarios, spec.scenario_timeout_secs, &bin_dirs, spec.env))
        .map_err(Error::io(&init))?;
    set_executable(&init)?;

    pack(root, work)
}

/// Copies `host_path` to the same absolute path under `root`, and its shared libraries when asked.
/// Where `--bin` files are put in the guest (and put on its PATH).
pub const GUEST_BIN_DIR: &str = "/opt/stance-vmtest/bin";

/// A `--bin` file: into GUEST_BIN_DIR under its own name, with its libraries at their host paths.
fn install_bin(root: &Path, host_path: &Path, with_libraries: bool) -> Result<()> {
    let name = host_path.file_name().unwrap_or(host_path.as_os_str());
    let dest = root.join(GUEST_BIN_DIR.trim_start_matches('/')).join(name);
    mkdir(dest.parent().unwrap_or(root))?;
    std::fs::copy(host_path, &dest).map_err(Error::io(host_path))?;
    install_libraries(root, host_path, with_libraries)
}

/// A host file to copy into the guest at a chosen absolute path (`--file SRC[:DST]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFile {
    pub host: PathBuf,
    pub guest: PathBuf,
}

/// `SRC[:DST]` of `--file`: DST defaults to SRC's own absolute path; it must be absolute.
pub fn parse_file(arg: &str) -> std::result::Result<GuestFile, String> {
    let (src, dst) = arg.split_once(':').map_or((arg, None), |(s, d)| (s, Some(d)));
    if src.is_empty() {
        return Err("expected SRC[:DST]".to_owned());
    }
    let host = std::path::absolute(src).map_err(|e| format!("{src}: {e}"))?;
    let guest = dst.map_or_else(|| host.clone(), PathBuf::from);
    if !guest.is_absolute() {
        return Err(format!("the guest path {} must be absolute", guest.display()));
    }
    Ok(GuestFile { host, guest })
}

/// A `--file`: its content (through symlinks: a program started by its name, like redis-server
/// → redis-check-rdb, keeps that name) at its guest path, and its libraries when it is dynamic.
fn install_guest_file(root: &Path, file: &GuestFile, with_libraries: bool) -> Result<()> {
    let dest = root.join(file.guest.strip_prefix("/").unwrap_or(&file.guest));
    mkdir(dest.parent().unwrap_or(root))?;
    std::fs::copy(&file.host, &dest).map_err(Error::io(&file.host))?;
    install_libraries(root, &file.host, with_libraries)
}

fn install_file(root: &Path, host_path: &Path, with_libraries: bool) -> Result<()> {
    copy_to_same_path(root, host_path)?;
    install_libraries(root, host_path, with_libraries)
}

fn install_libraries(root: &Path, host_path: &Path, with_libraries: bool) -> Result<()> {
    match libraries(host_path)? {
        None => Ok(()),
        Some(_) if !with_libraries => Err(Error::NeedsLibraries { path: host_path.to_owned() }),
        Some(libs) => libs.iter().try_for_each(|lib| copy_to_same_path(root, lib)),
    }
}

fn copy_to_same_path(root: &Path, host_path: &Path) -> Result<()> {
    let dest = root.join(host_path.strip_prefix("/").unwrap_or(host_path));
    mkdir(dest.parent().unwrap_or(root))?;
    // `fs::copy` follows symlinks, so a library reached through /lib64 → usr/lib64 lands as a file.
    std::fs::copy(host_path, &dest).map_err(Error::io(host_path))?;
    Ok(())
}

/// The libraries `ldd` lists for `path`, or `None` when it is not a dynamic executable (static
/// binaries, BPF objects, scripts: ldd exits non-zero for those).
fn libraries(path: &Path) -> Result<Option<Vec<PathBuf>>> {
    let out = cmd::output(Command::new("ldd").arg(path))?;
    if !out.status.success() {
        return Ok(None);
    }
    let libs = parse_ldd(&String::from_utf8_lossy(&out.stdout));
    Ok(if libs.is_empty() { None } else { Some(libs) })
}

/// Absolute paths in `ldd` output: `libc.so.6 => /lib/…/libc.so.6 (0x…)` and `/lib64/ld-linux… (0x…)`;
/// `linux-vdso.so.1 (0x…)` has none and is provided by the kernel.
pub fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let target = line.split_once("=>").map_or(line, |(_, t)| t);
            target.split_whitespace().next().filter(|p| p.starts_with('/')).map(PathBuf::from)
        })
        .collect()
}

/// The guest's PID 1: mount what Stance needs, report the kernel and the active LSMs, run each
/// scenario under a timeout between markers, power off.
pub fn init_script(
    scenarios: &[Scenario],
    timeout_secs: u64,
    bin_dirs: &[PathBuf],
    env: &[(String, String)],
) -> String {
    let mut path: Vec<String> = bin_dirs.iter().map(|d| d.display().to_string()).collect();
    path.extend(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(String::from));
    let mut s = format!(
        r#"#!/bin/sh
# Generated by stance-vmtest. Output goes to the serial console; the host reads the @@ markers.
export PATH={path} HOME=/root
/bin/busybox mount -t devtmpfs devtmpfs /dev
# The initramfs has no /dev/console node of its own, so PID 1 may have started without stdio.
exec </dev/console >/dev/console 2>&1
need() {{ "$@" || echo "stance-init: failed: $*"; }}
need mount -t proc proc /proc
need mount -t sysfs sysfs /sys
need mount -t tmpfs tmpfs /tmp
need mount -t tmpfs tmpfs /run
need mount -t securityfs securityfs /sys/kernel/security
need mount -t bpf bpf /sys/fs/bpf
need mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || echo "stance-init: no debugfs (optional)"
need mount -t cgroup2 cgroup2 /sys/fs/cgroup
need ip link set lo up
echo "@@{kernel} $(uname -r)@@"
echo "@@{lsm} $(cat /sys/kernel/security/lsm 2>/dev/null)@@"
run_scenario() {{
    echo "@@{begin} $1@@"
    # KILL, not TERM: a scenario stuck in the kernel must not hold up the run. rc 137 = timed out.
    timeout -s KILL "$2" sh "{dir}/$1.sh" </dev/null 2>&1
    echo "@@{end} $1 rc=$?@@"
    # What a scenario left behind (a daemon or driver after a failure or a timeout, their pins and
    # control socket) must not decide the next one. From PID 1, kill -1 reaches every other process.
    kill -KILL -1 2>/dev/null
    rm -rf /sys/fs/bpf/stance /run/stance
}}
"#,
        path = path.join(":"),
        kernel = markers::KERNEL,
        lsm = markers::LSM,
        begin = markers::BEGIN,
        end = markers::END,
        dir = GUEST_SCENARIOS,
    );
    for (key, value) in env {
        let _ = writeln!(s, "export {key}={}", shell_quote(value));
    }
    for scenario in scenarios {
        let _ = writeln!(s, "run_scenario {} {}", scenario.name, scenario.timeout(timeout_secs));
    }
    let _ = writeln!(s, "echo \"@@{}@@\"\npoweroff -f", markers::DONE);
    s
}

/// `root` as `<work>/initrd.cpio.gz`: cpio newc, every file owned by root.
/// `KEY=VALUE` of `--env`: KEY a shell variable name, VALUE one line.
pub fn parse_env(arg: &str) -> std::result::Result<(String, String), String> {
    let (key, value) = arg.split_once('=').ok_or("expected KEY=VALUE")?;
    let mut chars = key.chars();
    let name_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !name_ok {
        return Err(format!("{key:?} is not a shell variable name"));
    }
    if value.contains(['\n', '\0']) {
        return Err(format!("the value of {key} must be one line"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// VALUE in single quotes, for sh: every `'` closes the quotes, is escaped, and reopens them.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

fn pack(root: &Path, work: &Path) -> Result<PathBuf> {
    let mut entries = Vec::new();
    list_tree(root, Path::new("."), &mut entries)?;
    let cpio = work.join("initrd.cpio");
    cmd::checked_with_input(
        Command::new("cpio")
            .args(["--quiet", "-o", "-H", "newc", "-R", "0:0", "-O"])
            .arg(&cpio)
            .current_dir(root),
        (entries.join("\n") + "\n").as_bytes(),
    )?;
    cmd::checked(Command::new("gzip").args(["-1", "-n", "-f"]).arg(&cpio))?;
    Ok(work.join("initrd.cpio.gz"))
}

/// Every path below `dir` relative to the archive root, parents before children, sorted.
fn list_tree(dir: &Path, rel: &Path, entries: &mut Vec<String>) -> Result<()> {
    let mut children: Vec<_> = std::fs::read_dir(dir)
        .map_err(Error::io(dir))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(Error::io(dir))?;
    children.sort();
    for child in children {
        let name = child.file_name().unwrap_or_default();
        let child_rel = rel.join(name);
        entries.push(child_rel.display().to_string());
        if child.is_dir() && !child.is_symlink() {
            list_tree(&child, &child_rel, entries)?;
        }
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    mkdir(to)?;
    for entry in std::fs::read_dir(from).map_err(Error::io(from))? {
        let src = entry.map_err(Error::io(from))?.path();
        let dest = to.join(src.file_name().unwrap_or_default());
        if src.is_dir() {
            copy_tree(&src, &dest)?;
        } else {
            std::fs::copy(&src, &dest).map_err(Error::io(&src))?;
        }
    }
    Ok(())
}

fn mkdir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(Error::io(dir))
}

fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(Error::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_library_paths() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        assert!(parse_ldd("\tstatically linked\n").is_empty());
    }

    #[test]
    fn init_runs_scenarios_in_order_then_powers_off() {
        let scenarios = [
            Scenario { name: "00-a".into(), timeout_secs: None },
            Scenario { name: "10-b".into(), timeout_secs: Some(300) },
        ];
        let env = [("ROUNDS".to_owned(), "it's 9".to_owned())];
        let init = init_script(&scenarios, 60, &[PathBuf::from("/opt/x/bin")], &env);
        assert!(init.starts_with("#!/bin/sh\n"));
        assert!(init.contains("export PATH=/opt/x/bin:/usr/sbin:"));
        assert!(init.contains("timeout -s KILL \"$2\" sh \"/scenarios/$1.sh\""));
        let exported = init.find("export ROUNDS='it'\\''s 9'\n").unwrap();
        let a = init.find("run_scenario 00-a").unwrap();
        assert!(exported < a);
        let b = init.find("run_scenario 10-b").unwrap();
        let done = init.find("@@STANCE-VM-DONE@@").unwrap();
        assert!(a < b && b < done && done < init.find("poweroff -f").unwrap());
        for mount in ["securityfs", "-t bpf", "tracefs", "cgroup2 cgroup2 /sys/fs/cgroup"] {
            assert!(init.contains(mount), "{mount}");
        }
    }

    #[test]
    fn env_arguments_are_names_and_one_line_values() {
        assert_eq!(parse_env("A_1=x=y").unwrap(), ("A_1".to_owned(), "x=y".to_owned()));
        assert_eq!(parse_env("_B=").unwrap(), ("_B".to_owned(), String::new()));
        for bad in ["A", "1A=x", "A-B=x", "=x", "A=two\nlines"] {
            assert!(parse_env(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn file_arguments_default_to_the_same_path_and_need_an_absolute_guest_path() {
        let same = parse_file("/usr/sbin/nginx").unwrap();
        assert_eq!(
            (same.host.as_path(), same.guest.as_path()),
            (Path::new("/usr/sbin/nginx"), Path::new("/usr/sbin/nginx"))
        );
        let moved = parse_file("/tmp/x.conf:/etc/nginx/nginx.conf").unwrap();
        assert_eq!(moved.guest, Path::new("/etc/nginx/nginx.conf"));
        assert!(parse_file("relative").unwrap().host.is_absolute());
        for bad in ["", ":/etc/x", "/tmp/x:etc/x"] {
            assert!(parse_file(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_file_lands_at_its_guest_path_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real");
        std::fs::write(&target, "content").unwrap();
        let link = dir.path().join("by-name");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let root = dir.path().join("root");
        let file = GuestFile { host: link, guest: PathBuf::from("/usr/bin/by-name") };
        install_guest_file(&root, &file, false).unwrap();
        let copied = root.join("usr/bin/by-name");
        assert!(!copied.is_symlink());
        assert_eq!(std::fs::read_to_string(copied).unwrap(), "content");
        let missing = GuestFile { host: dir.path().join("absent"), guest: PathBuf::from("/x") };
        assert!(matches!(install_guest_file(&root, &missing, false), Err(Error::Io { .. })));
    }

    #[test]
    fn discover_sorts_filters_and_rejects_odd_names() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["10-b.sh", "00-a.sh", "notes.txt"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let names = |f| discover(dir.path(), f).map(|v| v.into_iter().map(|s| s.name).collect::<Vec<_>>());
        assert_eq!(names(None).unwrap(), ["00-a", "10-b"]);
        assert_eq!(names(Some("b")).unwrap(), ["10-b"]);
        assert!(matches!(discover(dir.path(), Some("zzz")), Err(Error::FilterMatchesNothing { .. })));
        std::fs::write(dir.path().join("20-c.sh"), "#!/bin/sh\n# vmtest-timeout: 400\necho\n").unwrap();
        let c = discover(dir.path(), Some("c")).unwrap();
        assert_eq!((c[0].timeout_secs, c[0].timeout(120), c[0].timeout(900)), (Some(400), 400, 900));
        std::fs::write(dir.path().join("20-c.sh"), "# vmtest-timeout: soon\n").unwrap();
        assert!(matches!(discover(dir.path(), Some("c")), Err(Error::BadTimeoutHeader { .. })));
        std::fs::remove_file(dir.path().join("20-c.sh")).unwrap();
        std::fs::write(dir.path().join("bad name.sh"), "").unwrap();
        assert!(matches!(discover(dir.path(), None), Err(Error::BadScenarioName { .. })));
    }
}
