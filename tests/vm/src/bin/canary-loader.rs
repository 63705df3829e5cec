//! `canary-loader`: loads the BPF-LSM canary (`canary/canary.bpf.c`), points it at one cgroup and one
//! file, attaches it to `lsm/file_open`, runs a command while it is attached, and exits with the
//! command's status. Scenario `10-lsm-canary.sh` uses it inside the VMs to prove that BPF-LSM
//! enforcement really happens there.
//!
//! The program stays attached only while this process lives: the link's file descriptor is its only
//! reference, so the kernel detaches it when the process exits, whatever way it exits.

use std::{
    ffi::OsString,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{bail, Context, Result};
use aya::{maps::Array, programs::Lsm, Btf, Ebpf};
use clap::Parser;

/// The object built by build.rs; empty when the BPF toolchain was missing at build time.
static EMBEDDED_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/canary.bpf.o"));

const PROGRAM: &str = "canary_file_open";
const HOOK: &str = "file_open";
const CONFIG_MAP: &str = "canary_config";

/// Mirrors `struct canary_config` in canary/canary.h.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct CanaryConfig {
    cgroup_id: u64,
    target_ino: u64,
}

// The C struct is two `__u64`s with no padding; a drift on either side fails the build here.
const _: () = assert!(std::mem::size_of::<CanaryConfig>() == 16);

// SAFETY: `CanaryConfig` is `repr(C)`, made only of integers, has no padding and every bit pattern is
// a valid value, which is what aya needs to copy it to and from the kernel as raw bytes.
unsafe impl aya::Pod for CanaryConfig {}

#[derive(Parser, Debug)]
#[command(name = "canary-loader", about = "Attach the BPF-LSM canary and run a command while it is attached")]
struct Args {
    /// BPF object to load instead of the one embedded at build time.
    #[arg(long)]
    object: Option<PathBuf>,
    /// cgroup v2 directory whose processes are denied opening the target.
    #[arg(long)]
    cgroup: PathBuf,
    /// The file they are denied (matched by inode number).
    #[arg(long)]
    target: PathBuf,
    /// Command to run while the program is attached.
    #[arg(required = true, last = true)]
    cmd: Vec<OsString>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("canary-loader: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<ExitCode> {
    let object = match &args.object {
        Some(path) => std::fs::read(path).with_context(|| format!("read {}", path.display()))?,
        None => EMBEDDED_OBJECT.to_vec(),
    };
    if object.is_empty() {
        bail!(
            "built without its BPF object: install clang-19 llvm-19 libbpf-dev bpftool \
             (stance-vmtest --install-deps) and rebuild"
        );
    }
    let config = CanaryConfig { cgroup_id: inode(&args.cgroup)?, target_ino: inode(&args.target)? };

    let started = Instant::now();
    let mut ebpf = Ebpf::load(&object).context("load BPF object")?;
    let mut map: Array<_, CanaryConfig> =
        Array::try_from(ebpf.map_mut(CONFIG_MAP).with_context(|| format!("no map {CONFIG_MAP}"))?)?;
    map.set(0, config, 0).context("write canary config")?;
    let btf = Btf::from_sys_fs().context("read kernel BTF")?;
    let program: &mut Lsm =
        ebpf.program_mut(PROGRAM).with_context(|| format!("no program {PROGRAM}"))?.try_into()?;
    program.load(HOOK, &btf).context("load lsm/file_open program")?;
    program.attach().context("attach lsm/file_open program")?;
    println!(
        "canary-loader: lsm/{HOOK} attached in {} ms (cgroup id {}, target inode {})",
        started.elapsed().as_millis(),
        config.cgroup_id,
        config.target_ino
    );

    let status = Command::new(&args.cmd[0])
        .args(&args.cmd[1..])
        .status()
        .with_context(|| format!("run {}", args.cmd[0].to_string_lossy()))?;
    // `ebpf` is still alive here, so the program was attached for the whole command.
    drop(ebpf);
    Ok(ExitCode::from(status.code().map_or(1, |c| c.clamp(0, 255) as u8)))
}

/// cgroup v2 ids are the inode numbers of the cgroup directories, so one helper serves both fields.
fn inode(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path).with_context(|| format!("stat {}", path.display()))?.ino())
}
