//! The `stance-vmtest` binary: argument parsing, the order of the steps, and exit codes
//! (0 all passed, 1 a scenario or VM failed, 2 the harness itself could not run).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    thread,
    time::{Duration, Instant},
};

use clap::{Parser, ValueEnum};

use stance_vmtest::{
    deps, initramfs,
    kernels::{self, Series},
    report, vm, Error, Result,
};

/// Host tools a run needs, with the Debian package that provides each.
const TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("/bin/busybox", "busybox-static"),
    ("cpio", "cpio"),
    ("gzip", "gzip"),
    ("ldd", "libc-bin"),
    ("apt-get", "apt"),
    ("dpkg", "dpkg"),
];

/// Seconds a VM is given to boot to /init and to power off, on top of its scenarios' time.
const BOOT_ALLOWANCE_SECS: u64 = 60;

#[derive(Parser, Debug)]
#[command(
    name = "stance-vmtest",
    about = "Run Stance's VM scenarios on Debian's 6.1 and 6.12 cloud kernels under QEMU",
    after_help = "Exit status: 0 all passed, 1 a scenario or VM failed, 2 the harness could not run."
)]
struct Cli {
    /// Which kernel(s) to boot.
    #[arg(long, value_enum, default_value_t = KernelChoice::All)]
    kernel: KernelChoice,
    /// Where downloaded kernels are kept [default: <repo>/.vmcache, which git ignores].
    #[arg(long, env = "STANCE_VMTEST_CACHE")]
    cache: Option<PathBuf>,
    /// A file to put into the guest's /opt/stance-vmtest/bin (on its PATH), with its libraries.
    #[arg(long = "bin", value_name = "PATH")]
    bins: Vec<PathBuf>,
    /// A host file to copy into the guest at DST (default: its own path), e.g. a server and its
    /// configuration; with --lib-from-ldd a dynamic executable brings its libraries (repeatable).
    #[arg(long = "file", value_name = "SRC[:DST]", value_parser = initramfs::parse_file)]
    files: Vec<initramfs::GuestFile>,
    /// Also copy the shared libraries (and dynamic loader) that `ldd` lists for each --bin.
    #[arg(long)]
    lib_from_ldd: bool,
    /// Directory whose `*.sh` files are the scenarios (copied to /scenarios in the guest).
    #[arg(long, required_unless_present = "install_deps")]
    scenarios: Option<PathBuf>,
    /// Seconds each VM may take from boot to power-off before it is killed and counted as failed
    /// [default: 60 for the boot plus each scenario's timeout, the longest a run can legitimately
    /// take, since each scenario is killed at its own timeout].
    #[arg(long)]
    timeout: Option<u64>,
    /// Seconds each scenario may take inside the guest before it is killed (rc=137); a scenario
    /// may ask for more with a `# vmtest-timeout: SECS` line near its top.
    #[arg(long, default_value_t = 240)]
    scenario_timeout: u64,
    /// A variable exported to every scenario (repeatable), e.g. `--env STANCE_BENCH_ROUNDS=30`.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = initramfs::parse_env)]
    env: Vec<(String, String)>,
    /// Run only the scenarios whose name contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Run the guest on QEMU's instruction clock (`-icount shift=0,sleep=off`): guest time is then
    /// 1 ns per executed guest instruction, deterministic from run to run, so benchmark timings
    /// are instruction counts rather than the busy host's time. Idle time is skipped (a guest
    /// `sleep` takes no host time), and scenario timeouts count guest time.
    #[arg(long)]
    icount: bool,
    /// Install the host packages the tier needs (apt-get), then run the scenarios if given.
    #[arg(long)]
    install_deps: bool,
}

impl Cli {
    fn clock(&self) -> vm::Clock {
        if self.icount {
            vm::Clock::Instructions
        } else {
            vm::Clock::Host
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum KernelChoice {
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
    All,
}

impl KernelChoice {
    fn series(self) -> Vec<Series> {
        match self {
            KernelChoice::V6_1 => vec![Series::V6_1],
            KernelChoice::V6_12 => vec![Series::V6_12],
            KernelChoice::All => Series::ALL.to_vec(),
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("stance-vmtest: {e}");
            ExitCode::from(2)
        }
    }
}

/// `Ok(true)` when everything passed.
fn run(cli: Cli) -> Result<bool> {
    if cli.install_deps {
        deps::ensure_packages()?;
    }
    let Some(scenario_dir) = &cli.scenarios else { return Ok(true) };
    let started = Instant::now();
    check_tools()?;
    let scenarios = initramfs::discover(scenario_dir, cli.filter.as_deref())?;

    let work = tempfile::Builder::new()
        .prefix("stance-vmtest-")
        .tempdir()
        .map_err(Error::io(std::env::temp_dir()))?;
    let initrd = initramfs::build(
        &initramfs::Spec {
            bins: &cli.bins,
            files: &cli.files,
            copy_libraries: cli.lib_from_ldd,
            scenario_dir,
            scenarios: &scenarios,
            scenario_timeout_secs: cli.scenario_timeout,
            env: &cli.env,
        },
        work.path(),
    )?;
    println!("==> initramfs {} ({} scenarios)", describe_size(&initrd), scenarios.len());

    let cache = cli.cache.clone().unwrap_or_else(default_cache);
    let mut kernels = Vec::new();
    for series in cli.kernel.series() {
        let kernel = kernels::fetch(series, &cache)?;
        let source = if kernel.downloaded { "downloaded" } else { "cached" };
        println!(
            "==> [{series}] {} {} ({source}: {})",
            kernel.package,
            kernel.version,
            kernel.vmlinuz.display()
        );
        kernels.push(kernel);
    }

    // One TCG VM is single-threaded and takes 1 GiB, so both kernels boot side by side.
    let timeout = Duration::from_secs(cli.timeout.unwrap_or_else(|| {
        BOOT_ALLOWANCE_SECS + scenarios.iter().map(|s| s.timeout(cli.scenario_timeout)).sum::<u64>()
    }));
    let clock = cli.clock();
    if clock == vm::Clock::Instructions {
        // tests/bench/observe_vm_report.py reads this line to label its figures as instructions.
        println!(
            "==> guest clock: instructions (QEMU -icount shift=0,sleep=off; 1 ns = 1 guest instruction)"
        );
    }
    let outcomes = thread::scope(|s| {
        let runs: Vec<_> = kernels.iter().map(|k| s.spawn(|| vm::run(k, &initrd, clock, timeout))).collect();
        runs.into_iter().map(|h| h.join().expect("VM thread panicked")).collect::<Vec<_>>()
    });

    let mut reports = Vec::new();
    for (kernel, outcome) in kernels.iter().zip(outcomes) {
        reports.push(report::judge(kernel, &scenarios, outcome?, timeout));
    }
    println!();
    for r in &reports {
        print!("{}", report::render(r));
    }
    println!("==> VM tier took {:.1} s", started.elapsed().as_secs_f64());
    println!("{}", report::summary_line(&reports));
    Ok(reports.iter().all(|r| r.failed() == 0 && r.problems.is_empty()))
}

/// `<repo>/.vmcache`, found from this crate's own location (`<repo>/tests/vm`).
fn default_cache() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir.ancestors().nth(2).unwrap_or(crate_dir).join(".vmcache")
}

fn check_tools() -> Result<()> {
    for &(tool, package) in TOOLS {
        if !on_path(tool) {
            return Err(Error::MissingTool { tool, package });
        }
    }
    Ok(())
}

fn on_path(tool: &str) -> bool {
    if tool.contains('/') {
        return Path::new(tool).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

fn describe_size(path: &Path) -> String {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    format!("{} ({:.1} MiB)", path.display(), size as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icount_flag_selects_the_instruction_clock() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["stance-vmtest", "--scenarios", "s"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).expect("valid arguments")
        };
        assert_eq!(parse(&["--icount"]).clock(), vm::Clock::Instructions);
        assert_eq!(parse(&[]).clock(), vm::Clock::Host);
    }
}
