//! `stance-enforce-test`: drives `stance::enforce` directly, without the daemon, for the VM
//! enforcement scenarios (and by hand). Not part of the product.
//!
//! ```text
//! stance-enforce-test run [--policy FILE --cgroup DIR... --modes file=enforce,...] [--policy-id N]
//! stance-enforce-test release --policy-id N
//! stance-enforce-test purge
//! stance-enforce-test match --policy FILE --cases FILE
//! ```
//!
//! `run` starts the enforcer (adopting what an earlier run pinned), prints one `status: DOMAIN: ...`
//! line per domain, applies the policy if one is given (`applied: policy N rev R`), prints `ready`,
//! then prints each verdict as it arrives (`verdict: deny|would-deny DOMAIN OBJECT key=value...`)
//! until SIGTERM/SIGINT. Pins stay (as after a daemon restart) unless `--release-on-exit`.
//!
//! `match` asks `stance::enforce::matcher::Matcher` (no kernel) for each case and prints one line per
//! case: `allow CASE` or `deny CASE`. A case is an `enforce-probe` command line, `PROGRAM ACTION
//! ARGS...` (PROGRAM: enforce-probe or a copy of it, which performs the action); blank lines and
//! `#` comments are skipped. Paths are given to the matcher as the kernel resolves them (symlinks
//! such as /proc/self followed, here in this process, so its pid stands for the prober's: the
//! matcher sees pids as `*` anyway).

use std::{
    io::Write,
    path::PathBuf,
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use stance::enforce::{
    matcher::Matcher, pin::PinLayout, verdict, Domain, Enforcer, Mode, Modes, Policy, StartOptions,
};

#[derive(Parser, Debug)]
#[command(name = "stance-enforce-test", about = "Drive Stance's enforcer directly (test tool)")]
struct Cli {
    /// bpffs directory for pins.
    #[arg(long, default_value = stance::paths::BPF_PIN_DIR, global = true)]
    pin_dir: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start (or adopt), optionally apply a policy, print verdicts until a signal.
    Run {
        /// Policy JSON (stance::enforce::Policy).
        #[arg(long, requires = "cgroup")]
        policy: Option<PathBuf>,
        /// cgroup directory the policy applies to (repeatable).
        #[arg(long)]
        cgroup: Vec<PathBuf>,
        /// Modes per domain: `file=enforce,process=audit`, or `all=enforce`.
        #[arg(long, default_value = "all=enforce")]
        modes: String,
        #[arg(long, default_value_t = 1)]
        policy_id: u32,
        #[arg(long, default_value = "vmtest")]
        workload: String,
        /// Report every repeat of a verdict (0) or at most one per window.
        #[arg(long, default_value_t = 0)]
        window_ms: u64,
        /// Release the policy before exiting on a signal (default: leave it pinned and enforced).
        #[arg(long)]
        release_on_exit: bool,
        /// Print a `timing:` line for start and apply.
        #[arg(long)]
        timing: bool,
        /// On SIGUSR1, apply the same policy this many more times (each a new revision swapped in
        /// under running workloads) and print `churned: N revisions in X ms`.
        #[arg(long, default_value_t = 0)]
        churn: u32,
    },
    /// Adopt the pins and release one policy.
    Release {
        #[arg(long)]
        policy_id: u32,
    },
    /// Remove every pin (detaching every enforcement program).
    Purge,
    /// The userspace matcher's verdict for each case (see the header).
    Match {
        /// Policy JSON (stance::enforce::Policy).
        #[arg(long)]
        policy: PathBuf,
        /// One enforce-probe command line per case.
        #[arg(long)]
        cases: PathBuf,
    },
}

/// A path as the kernel would name the object it reaches: symlinks resolved; for a file that does
/// not exist yet (O_CREAT), its resolved directory and its name.
fn resolved(path: &str) -> String {
    let p = std::path::Path::new(path);
    if let Ok(real) = std::fs::canonicalize(p) {
        return real.to_string_lossy().into_owned();
    }
    match (p.parent().and_then(|d| std::fs::canonicalize(d).ok()), p.file_name()) {
        (Some(dir), Some(name)) => dir.join(name).to_string_lossy().into_owned(),
        _ => path.to_owned(),
    }
}

/// PROGRAM as the executable path a process running it has (PATH searched for a bare name).
fn program_path(program: &str) -> String {
    if program.contains('/') || program.starts_with("memfd:") {
        return if program.starts_with("memfd:") { program.to_owned() } else { resolved(program) };
    }
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|p| p.is_file())
        .map_or_else(|| program.to_owned(), |p| resolved(&p.to_string_lossy()))
}

fn parse_addr(host: &str, port: &str) -> Result<(std::net::IpAddr, u16)> {
    Ok((
        host.parse().with_context(|| format!("address '{host}'"))?,
        port.parse().with_context(|| format!("port '{port}'"))?,
    ))
}

/// The matcher's verdict for one enforce-probe action performed by the executable `program`.
fn match_case(m: &Matcher, program: &str, action: &[&str]) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    Ok(match action {
        ["open" | "openat2" | "uring-open", path, rest @ ..] => {
            let (read, write) = match rest.first().copied().unwrap_or("r") {
                "r" => (true, false),
                "rw" => (true, true),
                "w" | "creat" | "trunc" => (false, true),
                other => anyhow::bail!("open mode '{other}'"),
            };
            m.file(&resolved(path), read, write)
        }
        ["exec", target] => {
            let target = resolved(target);
            let md = std::fs::metadata(&target).with_context(|| format!("stat {target}"))?;
            m.exec(&target, Some(md.dev()), Some(md.ino()), Some(program))
        }
        ["memfd-exec", _src, name, then @ ..] => {
            let label = format!("memfd:{name}");
            m.exec(&label, None, None, Some(program)) && (then.is_empty() || match_case(m, &label, then)?)
        }
        ["connect" | "uring-connect", host, port] => {
            let (addr, port) = parse_addr(host, port)?;
            m.connect(addr, port, "tcp")
        }
        ["udp-send", host, port] => {
            let (addr, port) = parse_addr(host, port)?;
            m.connect(addr, port, "udp")
        }
        ["unix-connect", name] if name.starts_with('@') => m.unix(name),
        ["unix-connect", path] => m.unix(&resolved(path)),
        ["raw-socket"] => m.capability(13), // CAP_NET_RAW
        ["chown", _, _] => m.capability(0), // CAP_CHOWN
        ["true"] => true,
        other => anyhow::bail!("no matcher question for the action {other:?}"),
    })
}

fn match_cases(policy: &std::path::Path, cases: &std::path::Path) -> Result<()> {
    let text = std::fs::read_to_string(policy).with_context(|| format!("read {}", policy.display()))?;
    let policy: Policy =
        serde_json::from_str(&text).with_context(|| format!("parse {}", policy.display()))?;
    let m = Matcher::new(&policy)?;
    let cases = std::fs::read_to_string(cases).with_context(|| format!("read {}", cases.display()))?;
    for line in cases.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let allowed =
            match_case(&m, &program_path(words[0]), &words[1..]).with_context(|| format!("case '{line}'"))?;
        println!("{} {line}", if allowed { "allow" } else { "deny" });
    }
    Ok(())
}

static STOP: AtomicBool = AtomicBool::new(false);
static CHURN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGUSR1 {
        CHURN.store(true, Ordering::SeqCst);
    } else {
        STOP.store(true, Ordering::SeqCst);
    }
}

fn parse_modes(s: &str) -> Result<Modes> {
    let mut m = Modes::default();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (d, mode) = part.split_once('=').with_context(|| format!("mode '{part}' is not DOMAIN=MODE"))?;
        let mode: Mode = mode.parse().map_err(anyhow::Error::msg)?;
        if d == "all" {
            m = Modes::all(mode);
        } else {
            m.set(d.parse::<Domain>().map_err(anyhow::Error::msg)?, mode);
        }
    }
    Ok(m)
}

fn cgroup_id(dir: &std::path::Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(dir).with_context(|| format!("stat {}", dir.display()))?.ino())
}

fn options(pin_dir: PathBuf, window_ms: u64) -> Result<StartOptions> {
    let mut opts = StartOptions::new(std::process::id(), stance::identity::cgroup2_mount()?);
    opts.pin_dir = pin_dir;
    opts.verdict_window = Duration::from_millis(window_ms);
    Ok(opts)
}

fn print_verdict(v: &verdict::Verdict) {
    println!(
        "verdict: {} {} {} exe={} comm={} pid={} access={} truncated={} send={} noaudit={} repeat={} policy={} cgroup={} from_source={}",
        if v.deny { "deny" } else { "would-deny" },
        v.domain,
        v.object,
        v.exe,
        v.comm,
        v.pid,
        v.access,
        u8::from(v.truncated),
        u8::from(v.send),
        u8::from(v.noaudit),
        v.repeat,
        v.policy_id,
        v.cgroup_id,
        u8::from(v.from_source())
    );
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Match { policy, cases } => match_cases(&policy, &cases)?,
        Cmd::Purge => {
            PinLayout::new(&cli.pin_dir).remove_all()?;
            println!("purged");
        }
        Cmd::Release { policy_id } => {
            let (mut enf, _) = Enforcer::start(&options(cli.pin_dir, 0)?)?;
            enf.release(policy_id)?;
            println!("released: policy {policy_id}");
        }
        Cmd::Run {
            policy,
            cgroup,
            modes,
            policy_id,
            workload,
            window_ms,
            release_on_exit,
            timing,
            churn,
        } => {
            // SAFETY: installing an async-signal-safe handler (it only stores an atomic).
            unsafe {
                libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
                libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
                libc::signal(libc::SIGUSR1, on_signal as *const () as libc::sighandler_t);
            }
            let started = Instant::now();
            let (mut enf, status) = Enforcer::start(&options(cli.pin_dir, window_ms)?)?;
            if timing {
                println!("timing: start {} ms", started.elapsed().as_millis());
            }
            for line in status.to_string().lines() {
                println!("status: {line}");
            }
            println!("status: adopted {}", status.adopted);
            for n in &status.notes {
                println!("note: {n}");
            }
            for p in enf.policies() {
                println!("policy: {} rev {} cgroups {:?} modes {:?}", p.policy_id, p.rev, p.cgroups, p.modes);
            }
            let modes = parse_modes(&modes)?;
            let mut applied: Option<(Policy, Vec<u64>)> = None;
            if let Some(file) = policy {
                let text =
                    std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
                let policy: Policy =
                    serde_json::from_str(&text).with_context(|| format!("parse {}", file.display()))?;
                let ids = cgroup.iter().map(|d| cgroup_id(d)).collect::<Result<Vec<_>>>()?;
                let t = Instant::now();
                let rev = enf.apply(&workload, policy_id, &ids, &policy, modes)?;
                if timing {
                    println!("timing: apply {} ms", t.elapsed().as_millis());
                }
                println!("applied: policy {policy_id} rev {rev}");
                applied = Some((policy, ids));
            }
            println!("ready");
            std::io::stdout().flush()?;
            let mut ring = enf.take_verdicts().context("verdict ring buffer already taken")?;
            while !STOP.load(Ordering::SeqCst) {
                if CHURN.swap(false, Ordering::SeqCst) {
                    if let Some((policy, ids)) = &applied {
                        let t = Instant::now();
                        let mut rev = 0;
                        for _ in 0..churn {
                            rev = enf.apply(&workload, policy_id, ids, policy, modes)?;
                        }
                        println!(
                            "churned: {churn} revisions in {} ms (now rev {rev})",
                            t.elapsed().as_millis()
                        );
                        std::io::stdout().flush()?;
                    }
                }
                let mut any = false;
                while let Some(item) = ring.next() {
                    any = true;
                    match verdict::decode(&item) {
                        Ok(v) if v.policy_id == stance::enforce::CANARY_POLICY_ID => {}
                        Ok(v) => print_verdict(&v),
                        Err(e) => println!("malformed: {e}"),
                    }
                }
                if any {
                    std::io::stdout().flush()?;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let (lost, unbuilt) = enf.verdict_losses();
            println!("losses: ringbuf {lost} unbuilt {unbuilt}");
            if release_on_exit {
                enf.release(policy_id)?;
                println!("released: policy {policy_id}");
            }
            println!("stopped");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stance-enforce-test: {e:#}");
            ExitCode::from(1)
        }
    }
}
